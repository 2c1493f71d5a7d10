// Reading DICOM JSON (PS3.18 F.2) as returned by QIDO-RS and WADO-RS metadata.

export const TAG = {
  SpecificCharacterSet: "00080005",
  StudyDate: "00080020",
  AccessionNumber: "00080050",
  Modality: "00080060",
  ModalitiesInStudy: "00080061",
  StudyDescription: "00081030",
  SeriesDescription: "0008103E",
  SOPInstanceUID: "00080018",
  PatientName: "00100010",
  PatientID: "00100020",
  PatientBirthDate: "00100030",
  PatientSex: "00100040",
  BodyPartExamined: "00180015",
  StudyInstanceUID: "0020000D",
  SeriesInstanceUID: "0020000E",
  SeriesNumber: "00200011",
  InstanceNumber: "00200013",
  NumberOfStudyRelatedSeries: "00201206",
  NumberOfStudyRelatedInstances: "00201208",
  NumberOfSeriesRelatedInstances: "00201209",
  NumberOfFrames: "00280008",
  Rows: "00280010",
  Columns: "00280011",
  WindowCenter: "00281050",
  WindowWidth: "00281051",
};

/** The first value of tag in a DICOM JSON object, or fallback. */
export function first(obj, tag, fallback = "") {
  const element = obj && obj[tag];
  if (!element || !Array.isArray(element.Value) || element.Value.length === 0) return fallback;
  const value = element.Value[0];
  return value === null || value === undefined ? fallback : value;
}

/** All values of tag (an empty list when absent). */
export function values(obj, tag) {
  const element = obj && obj[tag];
  return element && Array.isArray(element.Value) ? element.Value : [];
}

/** A PN value as the DICOM string "Alphabetic=Ideographic=Phonetic" (for formatPersonName). */
export function personName(obj, tag) {
  const value = first(obj, tag, null);
  if (!value) return "";
  if (typeof value === "string") return value;
  const groups = [value.Alphabetic || "", value.Ideographic || "", value.Phonetic || ""];
  while (groups.length > 1 && !groups[groups.length - 1]) groups.pop();
  return groups.join("=");
}

/** A numeric value (IS/DS may arrive as strings), or null. */
export function number(obj, tag) {
  const value = first(obj, tag, null);
  if (value === null || value === "") return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}
