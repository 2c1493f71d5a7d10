// Server errors in the user's language, by the stable `code` of the hub's problem+json answers
// (src/imaging_hub/errors.py, docs/errors.md). The hub's `detail` is English prose for operators:
// it is shown only in the English interface, never on a Chinese screen. A code without a
// translation here falls back to a message for its HTTP status.

import { addStrings, getLanguage, t } from "./i18n.js";

const CODES = {
  "zh-CN": {
    unauthenticated: "登录已过期，请重新登录。",
    authentication_failed: "用户名或密码错误。",
    account_locked: "多次登录失败，账号已被暂时锁定，请稍后再试。",
    account_disabled: "该账号已被停用，请联系管理员。",
    too_many_attempts: "登录尝试过于频繁，请稍后再试。",
    weak_password: "密码不符合要求：至少 10 个字符，且不能与用户名相同。",
    forbidden: "您没有执行此操作的权限。",
    not_found: "未找到请求的内容，或您无权查看。",
    conflict: "操作与当前状态冲突，请刷新后重试。",
    claim_conflict: "该检查已被其他医生领取，或当前状态不可领取。请刷新工作列表。",
    uid_conflict: "该检查的 UID 已属于其他卫生院，已暂停转发，请联系管理员。",
    retry_later: "服务器正忙，请稍后重试。",
    invalid_request: "请求参数有误。",
    bad_request: "请求无效。",
    validation_failed: "输入有误，请检查后重新提交。",
    value_not_storable: "输入内容过长或含有无法保存的字符。",
    invalid_window: "统计时间范围无效（结束早于开始或超过一年）。",
    invalid_dicom: "不是可接受的 DICOM 文件。",
    invalid_uid: "DICOM UID 无效。",
    checksum_mismatch: "数据在传输中损坏（校验和不符），请重新发送。",
    study_mismatch: "图像不属于所指定的检查。",
    not_acceptable: "无法以所请求的格式提供该内容。",
    unsupported_media_type: "不支持的数据格式。",
    payload_too_large: "上传的数据过大。",
    headers_too_large: "请求头过大，请清除浏览器 Cookie 后重试。",
    last_admin: "不能停用或降级自己的账号，也不能停用最后一位管理员。",
    not_eligible: "该医生没有此检查的阅片资格（检查类型、部位或卫生院），或当前不在值班，未改派。",
    method_not_allowed: "不支持此操作。",
    storage_unavailable: "影像存储暂时不可用，请稍后重试。",
    signing_password_wrong: "签名密码错误，报告未签发。",
    certificate_revoked: "您的签名证书已被吊销，无法签发报告，请联系管理员。",
    pki_error: "签名证书或密钥无法读取，请联系管理员。",
    signing_failed: "报告签名或时间戳失败，请稍后重试。",
    report_font_missing: "服务器缺少中文字体，无法生成报告 PDF，请联系管理员。",
    invalid_key_image: "关键图像无效。",
    report_not_holder: "只有认领此检查的医生可以书写和签发报告。",
    report_not_author: "这是其他医生的报告草稿，您不能修改或签发。",
    report_already_signed: "报告已签发，不能再修改；如需更正请写补充报告。",
    report_not_signed: "此检查还没有已签发的报告，不能写补充报告。",
    report_impression_empty: "诊断意见（印象）为空，报告不能签发。",
    report_invalid: "报告内容无效：模板、危急值类别或文字长度有误。",
    report_key_image_invalid: "关键图像无效：必须是本检查的影像（帧和窗宽窗位有效）。",
    report_study_empty: "此检查没有影像，不能签发报告。",
    report_not_critical: "此报告不是危急值报告，无需确认。",
    report_already_acknowledged: "此危急值已确认接收。",
    report_ack_user_invalid: "确认人不是本卫生院的在职用户，危急值确认未记录。",
    report_ack_time_invalid: "危急值确认时间无效（晚于当前时间或早于报告签发），未记录。",
    report_template_exists: "已存在同名模板；请使用其他代码或更高的版本号。",
    order_invalid: "检查申请有误，请修改标出的项目后重新提交。",
    order_not_open: "该检查申请已完成、已取消或已中止，不能再执行此操作。",
    mpps_invalid: "检查设备发来的执行状态（MPPS）无效。",
  },
  en: {
    unauthenticated: "Your session has expired. Please log in again.",
    authentication_failed: "Incorrect username or password.",
    account_locked: "This account is locked for a while after repeated failed logins.",
    account_disabled: "This account is disabled. Please contact the administrator.",
    too_many_attempts: "Too many login attempts. Please wait and try again.",
    weak_password: "The password does not meet the rules",
    forbidden: "You are not allowed to do this.",
    not_found: "The requested item was not found, or you may not see it.",
    conflict: "This conflicts with the current state. Reload and try again.",
    claim_conflict: "The study is held by another radiologist or cannot be claimed now.",
    uid_conflict: "This study's UID belongs to another clinic; forwarding is parked.",
    retry_later: "The server is busy. Please try again.",
    invalid_request: "The request is not valid",
    bad_request: "The request is not valid.",
    validation_failed: "Invalid input",
    value_not_storable: "A value is too long or contains characters that cannot be stored.",
    invalid_window: "The statistics window is not valid",
    invalid_dicom: "Not an acceptable DICOM file",
    invalid_uid: "A DICOM UID is not valid",
    checksum_mismatch: "The data was damaged in transit (checksum mismatch). Send it again.",
    study_mismatch: "The image does not belong to the study named.",
    not_acceptable: "This cannot be delivered in the requested format.",
    unsupported_media_type: "This data format is not supported.",
    payload_too_large: "The upload is too large.",
    headers_too_large: "The request headers are too large. Clear the browser's cookies and try again.",
    last_admin: "You cannot disable or demote your own account, nor the last active administrator.",
    not_eligible: "This radiologist is not eligible for the study (modality, body part or clinic) or not on duty: not reassigned.",
    method_not_allowed: "This operation is not supported.",
    storage_unavailable: "The image store is unavailable. Please try again later.",
    signing_password_wrong: "Wrong signing password: the report was not signed.",
    certificate_revoked: "Your signing certificate is revoked. Please contact the administrator.",
    pki_error: "The signing certificate or key cannot be read. Please contact the administrator.",
    signing_failed: "Signing or timestamping the report failed. Please try again.",
    report_font_missing: "The server lacks the Chinese font for report PDFs.",
    invalid_key_image: "The key image is not valid.",
    report_not_holder: "Only the radiologist holding this study's claim writes and signs its report.",
    report_not_author: "This draft belongs to another radiologist: you cannot change or sign it.",
    report_already_signed: "The report is signed and never changes; write an addendum to correct it.",
    report_not_signed: "This study has no signed report to amend yet.",
    report_impression_empty: "The impression is empty: the report cannot be signed.",
    report_invalid: "The report is not valid: template, critical category or text length.",
    report_key_image_invalid: "The key image is not valid: it must be an image of this study (with a valid frame and window).",
    report_study_empty: "This study holds no images: no report can be signed.",
    report_not_critical: "This report is not a critical result: nothing to acknowledge.",
    report_already_acknowledged: "This critical result was acknowledged already.",
    report_ack_user_invalid: "The acknowledging user is not an active user of this clinic: the acknowledgement was not recorded.",
    report_ack_time_invalid: "The acknowledgement time is in the future or before the report was signed: not recorded.",
    report_template_exists: "A template with this code exists; use another code or a higher version.",
    order_invalid: "The order has invalid fields",
    order_not_open: "This order is completed, cancelled or discontinued: this cannot be done now.",
    mpps_invalid: "The modality's performed procedure step (MPPS) report is not valid.",
  },
};

// Codes whose English message is completed by the hub's detail (it names the offending field).
const WITH_DETAIL = new Set([
  "weak_password",
  "order_invalid",
  "invalid_request",
  "validation_failed",
  "invalid_window",
  "invalid_dicom",
  "invalid_uid",
]);

addStrings({
  "zh-CN": Object.fromEntries(Object.entries(CODES["zh-CN"]).map(([k, v]) => [`error.code.${k}`, v])),
  en: Object.fromEntries(Object.entries(CODES.en).map(([k, v]) => [`error.code.${k}`, v])),
});

function byStatus(status) {
  if (status === 401) return t("error.session");
  if (status === 403) return t("error.forbidden");
  if (status === 404) return t("error.notFound");
  if (status >= 500) return t("error.server");
  return t("error.generic", { status });
}

/** The message for an error answer: by code, else by status; English detail only in English. */
export function problemMessage(status, code, detail) {
  const english = getLanguage() === "en";
  if (code && Object.hasOwn(CODES["zh-CN"], code)) {
    const text = t(`error.code.${code}`);
    return english && detail && WITH_DETAIL.has(code) ? `${text}: ${detail}` : text;
  }
  const text = byStatus(status);
  return english && detail && status < 500 ? `${text} ${detail}` : text;
}

/** Whether the code is one this module translates (for tests and pages). */
export function knownCode(code) {
  return Object.hasOwn(CODES["zh-CN"], code);
}
