// Display helpers shared by pages: DICOM person names, sex/age, body parts, study status and
// priority.

import { addStrings, getLanguage, hasString, t } from "./i18n.js";

addStrings({
  "zh-CN": {
    "status.receiving": "接收中",
    "status.unread": "待阅片",
    "status.in_progress": "阅片中",
    "status.escalated": "会诊中",
    "status.signed": "已签发",
    "status.delivered": "已送达",
    "status.acknowledged": "已确认接收",
    "status.cancelled": "已取消",
    "priority.stat": "急诊",
    "priority.urgent": "加急",
    "priority.routine": "常规",
    "sex.M": "男",
    "sex.F": "女",
    "sex.O": "其他",
    "age.years": "{n}岁",
    "age.months": "{n}个月",
    "age.days": "{n}天",
  },
  en: {
    "status.receiving": "Receiving",
    "status.unread": "Unread",
    "status.in_progress": "In progress",
    "status.escalated": "Escalated",
    "status.signed": "Signed",
    "status.delivered": "Delivered",
    "status.acknowledged": "Acknowledged",
    "status.cancelled": "Cancelled",
    "priority.stat": "STAT",
    "priority.urgent": "Urgent",
    "priority.routine": "Routine",
    "sex.M": "M",
    "sex.F": "F",
    "sex.O": "O",
    "age.years": "{n} y",
    "age.months": "{n} mo",
    "age.days": "{n} d",
  },
});

const CJK = /[\u3400-\u9fff\uf900-\ufaff]/;

function formatGroup(group) {
  const parts = group
    .split("^")
    .map((p) => p.trim())
    .filter(Boolean);
  if (parts.length === 0) return "";
  // Chinese names are written family name first with no space: 王^小东 -> 王小东.
  if (parts.every((p) => CJK.test(p))) return parts.join("");
  if (parts.length === 1) return parts[0];
  // Latin: FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX -> "FAMILY, GIVEN MIDDLE".
  const [family, given, middle] = parts;
  return `${family}, ${[given, middle].filter(Boolean).join(" ")}`;
}

// DICOM Body Part Examined codes (the exam catalogue's and the common ones), by name.
addStrings({
  "zh-CN": {
    "bodyPart.ABDOMEN": "腹部",
    "bodyPart.ANKLE": "踝关节",
    "bodyPart.CHEST": "胸部",
    "bodyPart.CSPINE": "颈椎",
    "bodyPart.HAND": "手",
    "bodyPart.HEAD": "头部",
    "bodyPart.KNEE": "膝关节",
    "bodyPart.LSPINE": "腰椎",
    "bodyPart.PELVIS": "骨盆",
    "bodyPart.SKULL": "颅骨",
    "bodyPart.THYROID": "甲状腺",
    "bodyPart.TSPINE": "胸椎",
    "bodyPart.SHOULDER": "肩关节",
    "bodyPart.ELBOW": "肘关节",
    "bodyPart.WRIST": "腕关节",
    "bodyPart.HIP": "髋关节",
    "bodyPart.FOOT": "足",
    "bodyPart.BREAST": "乳腺",
    "bodyPart.NECK": "颈部",
    "bodyPart.HEART": "心脏",
    "bodyPart.EXTREMITY": "四肢",
  },
  en: {
    "bodyPart.ABDOMEN": "Abdomen",
    "bodyPart.ANKLE": "Ankle",
    "bodyPart.CHEST": "Chest",
    "bodyPart.CSPINE": "C-spine",
    "bodyPart.HAND": "Hand",
    "bodyPart.HEAD": "Head",
    "bodyPart.KNEE": "Knee",
    "bodyPart.LSPINE": "L-spine",
    "bodyPart.PELVIS": "Pelvis",
    "bodyPart.SKULL": "Skull",
    "bodyPart.THYROID": "Thyroid",
    "bodyPart.TSPINE": "T-spine",
    "bodyPart.SHOULDER": "Shoulder",
    "bodyPart.ELBOW": "Elbow",
    "bodyPart.WRIST": "Wrist",
    "bodyPart.HIP": "Hip",
    "bodyPart.FOOT": "Foot",
    "bodyPart.BREAST": "Breast",
    "bodyPart.NECK": "Neck",
    "bodyPart.HEART": "Heart",
    "bodyPart.EXTREMITY": "Extremity",
  },
});

/**
 * A DICOM PN value for display. Component groups (alphabetic=ideographic=phonetic) are shown as
 * "ideographic (alphabetic)" when both exist. The raw value is never interpreted as markup.
 */
export function formatPersonName(pn) {
  if (!pn) return "";
  const groups = String(pn).split("=").map(formatGroup);
  const [alphabetic = "", ideographic = ""] = groups;
  if (ideographic && alphabetic && ideographic !== alphabetic) {
    return `${ideographic} (${alphabetic})`;
  }
  return ideographic || alphabetic || groups.filter(Boolean).join(" ");
}

function parseDa(da) {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(da || "");
  return m ? new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : null;
}

/** Age at the study date (or today) from DICOM DA birth date: "45岁" / "45 y"; "" if unknown. */
export function formatAge(birthDa, studyDa) {
  const birth = parseDa(birthDa);
  if (!birth) return "";
  const at = parseDa(studyDa) || new Date();
  let months = (at.getFullYear() - birth.getFullYear()) * 12 + at.getMonth() - birth.getMonth();
  if (at.getDate() < birth.getDate()) months -= 1;
  if (months < 0) return "";
  if (months >= 24) return t("age.years", { n: Math.floor(months / 12) });
  if (months >= 1) return t("age.months", { n: months });
  const days = Math.round((at - birth) / 86400000);
  return days >= 0 ? t("age.days", { n: days }) : "";
}

export function formatSex(sex) {
  const key = `sex.${sex}`;
  return sex && hasString(key) ? t(key) : sex || "";
}

/** "男 / 45岁" */
export function formatSexAge(sex, birthDa, studyDa) {
  return [formatSex(sex), formatAge(birthDa, studyDa)].filter(Boolean).join(" / ");
}

/** A DICOM Body Part Examined code by name in the user's language ("CHEST" → "胸部"); a code
 * without a name as it is. */
export function bodyPartName(code) {
  const key = `bodyPart.${String(code || "").toUpperCase()}`;
  return code ? (hasString(key) ? t(key) : String(code)) : "";
}

export function statusLabel(status) {
  return hasString(`status.${status}`) ? t(`status.${status}`) : status;
}

export function priorityLabel(priority) {
  return hasString(`priority.${priority}`) ? t(`priority.${priority}`) : priority;
}

/** A localised number (thousands separators). */
export function formatNumber(n) {
  return new Intl.NumberFormat(getLanguage()).format(n);
}
