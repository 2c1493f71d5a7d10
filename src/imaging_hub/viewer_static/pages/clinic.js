// Clinic staff landing page (#/clinic). Clinic accounts cannot use the reading worklist; the
// hub has no clinic-scoped study list yet, so this page says so plainly.

import { addStrings, t } from "../i18n.js";
import { h } from "../dom.js";
import { registerRoute } from "../router.js";

addStrings({
  "zh-CN": {
    "clinic.title": "本院检查",
    "clinic.heading": "{institution}",
    "clinic.notYet":
      "卫生院门户（查看本院检查的状态、下载已签发的报告）将在下一个版本中提供。影像上传照常进行：检查设备发送到本院网关的图像会自动传到影像中心。",
  },
  en: {
    "clinic.title": "Our studies",
    "clinic.heading": "{institution}",
    "clinic.notYet":
      "The clinic portal (your clinic's studies with their status, signed reports to download) comes in the next release. Image upload works as usual: images your machines send to the clinic gateway reach the hub by themselves.",
  },
});

registerRoute({
  path: "/clinic",
  title: "clinic.title",
  roles: ["clinic_staff"],
  home: ["clinic_staff"],
  nav: true,
  order: 10,
  render({ root, user }) {
    root.appendChild(
      h(
        "section",
        { class: "clinic-page" },
        h("h1", {}, t("clinic.heading", { institution: user.institution_name })),
        h("p", { class: "message message-info", id: "clinic-not-yet" }, t("clinic.notYet")),
      ),
    );
  },
});
