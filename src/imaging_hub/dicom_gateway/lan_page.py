"""The gateway's LAN page: clinic staff find, print and acknowledge reports while the WAN is down.

A small Starlette app, served by uvicorn in a thread of the gateway's main process on
``lan_page_host:lan_page_port`` (off by default; HTTPS with ``lan_page_tls_cert_file`` and
``lan_page_tls_key_file``).
Plain server-rendered HTML, no JavaScript:

- ``GET/POST /login``: user name + password of the hub account, verified offline against the
  argon2id hashes synced from the hub (:class:`~imaging_hub.dicom_gateway.reports.StaffVerifier`);
  failed attempts are limited per client address and per user name (429).
- ``GET /``: the reports held (``?q=`` patient name, ID or accession number), critical results
  awaiting acknowledgement first and marked until acknowledged.
- ``GET /reports/{id}/pdf``: the signed PDF (inline to print; ``?download=1`` as attachment).
- ``GET/POST /reports/{id}/acknowledge``: acknowledge a critical result (method + read-back),
  kept at once and passed on to the hub by the pull loop.
- ``POST /logout``.

Sessions live in memory (a random token in an HttpOnly, SameSite=Strict cookie, Secure over
HTTPS; 30 minutes idle, 12 hours at most) and end when the user leaves the synced staff list or
their password changes. Every POST carries the session's CSRF token and a same-origin
``Origin`` (when the browser sends one). Every answer is ``no-store`` with a strict CSP. Texts are
zh-CN by default, English with ``?lang=en`` (kept in a cookie). Nothing about patients is logged
(uvicorn's access log is off: search terms are in URLs).
"""

import hmac
import html
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode
from zoneinfo import ZoneInfo

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from imaging_hub.dicom_gateway.reports import (
    ACK_METHODS,
    HeldReport,
    ReportStore,
    StaffMember,
    StaffVerifier,
)

log = logging.getLogger(__name__)

SESSION_COOKIE = "lan_session"
LANG_COOKIE = "lan_lang"
SESSION_IDLE_SECONDS = 30 * 60
SESSION_MAX_SECONDS = 12 * 3600
MAX_SESSIONS = 500
MAX_FORM_BYTES = 16 * 1024
LOGIN_WINDOW_SECONDS = 300.0
LOGIN_MAX_FAILURES_PER_ADDRESS = 10
LOGIN_MAX_FAILURES_PER_USER = 5

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TEXTS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "title": "检查报告",
        "login": "登录",
        "username": "用户名",
        "password": "密码",
        "login_hint": "使用影像中心的账号登录（本院工作人员）。网络中断时也可使用。",
        "bad_login": "用户名或密码错误。",
        "too_many": "登录失败次数过多，请稍后再试。",
        "logout": "退出",
        "search": "患者姓名、ID 或检查号",
        "find": "查找",
        "sex.M": "男",
        "sex.F": "女",
        "sex.O": "其他",
        "empty": "没有报告。",
        "patient": "患者",
        "study": "检查",
        "signed_at": "签发时间",
        "signer": "报告医生",
        "report": "报告",
        "addendum": "补充报告",
        "print": "打开/打印",
        "download": "下载",
        "critical": "危急值：{category}",
        "critical_open": "未确认",
        "acknowledge": "确认接收",
        "acknowledged": "已确认 {time}",
        "ack_by": "，{name}",
        "ack_where": "（{where}）",
        "via.portal": "门户",
        "via.gateway": "本机页面",
        "ack_waiting": "（待同步到影像中心）",
        "ack_local": "（仅保存在本机）",
        "replaced": "影像中心已将此报告号用于另一份报告；此报告仅保存在本机。",
        "ack_refused": "（影像中心未接受：{error}）",
        "ack_title": "确认接收危急值",
        "ack_method": "通知方式",
        "ack_read_back": "复述内容（接收人复述的结果）",
        "ack_confirm": "确认",
        "ack_cancel": "返回",
        "ack_need": "请选择通知方式并填写复述内容。",
        "ack_done": "已确认接收。",
        "ack_not_open": "此报告不是待确认的危急值。",
        "method.phone": "电话",
        "method.portal": "门户",
        "method.in_person": "当面",
        "method.message": "消息",
        "not_found": "找不到此报告。",
        "forbidden": "请求无效（页面已过期），请重试。",
        "bad_request": "请求无效。",
        "signed_in_as": "{name}",
        "open_criticals": "有 {n} 份危急值报告尚未确认接收。",
        "intro": "本网关保存的本院报告（网络中断时也可查看、打印）。",
        "lang_other": "English",
    },
    "en": {
        "title": "Reports",
        "login": "Sign in",
        "username": "User name",
        "password": "Password",
        "login_hint": "Sign in with your hub account (clinic staff). Works while the WAN is down.",
        "bad_login": "Wrong user name or password.",
        "too_many": "Too many failed sign-ins; try again later.",
        "logout": "Sign out",
        "search": "Patient name, ID or accession number",
        "find": "Find",
        "empty": "No reports.",
        "patient": "Patient",
        "study": "Study",
        "signed_at": "Signed",
        "signer": "Radiologist",
        "report": "Report",
        "addendum": "Addendum",
        "print": "Open/print",
        "download": "Download",
        "critical": "Critical result: {category}",
        "critical_open": "not acknowledged",
        "acknowledge": "Acknowledge",
        "acknowledged": "Acknowledged {time}",
        "ack_by": " by {name}",
        "ack_where": " ({where})",
        "via.portal": "portal",
        "via.gateway": "LAN page",
        "ack_waiting": " (waiting to reach the hub)",
        "ack_local": " (kept at this gateway only)",
        "replaced": "The hub now uses this report's number for another report; this one is kept "
        "at this gateway only.",
        "ack_refused": " (the hub did not accept it: {error})",
        "ack_title": "Acknowledge the critical result",
        "ack_method": "How it was passed on",
        "ack_read_back": "Read-back (the result as the receiver repeated it)",
        "ack_confirm": "Acknowledge",
        "ack_cancel": "Back",
        "ack_need": "Choose how it was passed on and enter the read-back.",
        "ack_done": "Acknowledged.",
        "ack_not_open": "This report is not a critical result awaiting acknowledgement.",
        "method.phone": "Phone",
        "method.portal": "Portal",
        "method.in_person": "In person",
        "method.message": "Message",
        "not_found": "No such report.",
        "forbidden": "Invalid request (the page expired); please try again.",
        "bad_request": "Invalid request.",
        "signed_in_as": "{name}",
        "open_criticals": "{n} critical result(s) not yet acknowledged.",
        "intro": "Your clinic's reports held by this gateway (also while the WAN is down).",
        "sex.M": "M",
        "sex.F": "F",
        "sex.O": "Other",
        "lang_other": "中文",
    },
}

CSS = """
body { font-family: "Noto Sans CJK SC", "WenQuanYi Micro Hei", sans-serif; margin: 0;
  color: #1b1b1b; background: #f6f7f9; }
header { display: flex; gap: 1rem; align-items: center; padding: .6rem 1rem; background: #123;
  color: #fff; }
header h1 { font-size: 1.1rem; margin: 0; flex: 1; }
header a, header button { color: #fff; background: none; border: 1px solid #fff8;
  padding: .2rem .6rem; border-radius: 4px; font: inherit; cursor: pointer; text-decoration: none; }
main { padding: 1rem; }
form.inline { display: inline; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #dde;
  vertical-align: top; }
tr.critical-open { background: #fde8e8; }
tr.critical-open td:first-child { border-left: 6px solid #c00; }
.band { display: inline-block; font-weight: bold; color: #fff; background: #c00;
  padding: .1rem .4rem; border-radius: 3px; }
.acked { color: #155724; }
.alert { padding: .6rem 1rem; border-radius: 4px; margin-bottom: 1rem; }
.alert.error { background: #fde8e8; color: #900; }
.alert.ok { background: #e6f4ea; color: #155724; }
.alert.warn { background: #fff3cd; color: #6b4e00; }
.box { max-width: 28rem; margin: 3rem auto; background: #fff; padding: 1.5rem; border-radius: 6px; }
label { display: block; margin: .8rem 0 .2rem; }
input[type=text], input[type=password], input[type=search], select, textarea { width: 100%;
  box-sizing: border-box; padding: .4rem; font: inherit; }
button.primary { margin-top: 1rem; padding: .5rem 1.2rem; font: inherit; background: #1f5fbf;
  color: #fff; border: 0; border-radius: 4px; cursor: pointer; }
.muted { color: #666; font-size: .9rem; }
form[role=search] { display: flex; gap: .5rem; max-width: 40rem; margin-bottom: 1rem; }
form[role=search] button { padding: .4rem 1.2rem; font: inherit; background: #1f5fbf;
  color: #fff; border: 0; border-radius: 4px; cursor: pointer; white-space: nowrap; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def person_name(pn: str) -> str:
    """A DICOM PN for display: the ideographic group (with the alphabetic one), ^ as spaces."""
    groups = [" ".join(p for p in g.split("^") if p).strip() for g in pn.split("=")]
    alphabetic = groups[0] if groups else ""
    ideographic = groups[1] if len(groups) > 1 else ""
    if ideographic and alphabetic and ideographic != alphabetic:
        return f"{ideographic} ({alphabetic})"
    return ideographic or alphabetic


def dicom_date(da: str) -> str:
    return f"{da[:4]}-{da[4:6]}-{da[6:8]}" if len(da) == 8 and da.isdigit() else da


#: The zone of GatewaySettings.timezone's default.
DEFAULT_ZONE = ZoneInfo("Asia/Shanghai")


def local_time(iso: str | None, zone: ZoneInfo) -> str:
    """An ISO 8601 moment as the clinic's wall clock in *zone* (a moment without an offset is
    shown as it is)."""
    if not iso:
        return ""
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso[:32]
    if moment.tzinfo is not None:
        moment = moment.astimezone(zone)
    return moment.strftime("%Y-%m-%d %H:%M")


@dataclass
class LanSession:
    username: str
    display_name: str
    password_hash: str
    csrf: str
    created: float
    last_seen: float


@dataclass
class _Throttle:
    """Failed sign-ins per key in a sliding window."""

    limit: int
    window: float = LOGIN_WINDOW_SECONDS
    failures: dict[str, deque[float]] = field(default_factory=dict)

    def blocked(self, key: str, now: float) -> bool:
        seen = self.failures.get(key)
        if not seen:
            return False
        while seen and seen[0] < now - self.window:
            seen.popleft()
        if not seen:
            del self.failures[key]
            return False
        return len(seen) >= self.limit

    def fail(self, key: str, now: float) -> None:
        if len(self.failures) > 10_000:  # bounded memory under a spray of names
            self.failures.clear()
        self.failures.setdefault(key, deque()).append(now)


class SecurityHeaders:
    """Adds the strict headers to every answer (no-store: everything here is PHI)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = [
                    (b"cache-control", b"no-store"),
                    (b"pragma", b"no-cache"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    # not no-referrer: with it, form POSTs send "Origin: null"
                    (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"cross-origin-resource-policy", b"same-origin"),
                ]
                content_type = dict(headers).get(b"content-type", b"")
                if not content_type.startswith(b"application/pdf"):
                    extra.append((b"content-security-policy", CSP.encode()))
                headers += [(k, v) for k, v in extra if k not in names]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class LanPage:
    """The LAN page app over a :class:`ReportStore`; ``app`` is the ASGI application."""

    def __init__(
        self,
        store: ReportStore,
        *,
        clinic: str,
        secure_cookie: bool = False,
        zone: ZoneInfo = DEFAULT_ZONE,
    ) -> None:
        self.store = store
        self.clinic = clinic
        self.zone = zone
        self.verifier = StaffVerifier(store)
        self.secure_cookie = secure_cookie
        self._sessions: dict[str, LanSession] = {}
        self._lock = threading.Lock()
        self._by_address = _Throttle(LOGIN_MAX_FAILURES_PER_ADDRESS)
        self._by_user = _Throttle(LOGIN_MAX_FAILURES_PER_USER)
        routes = [
            Route("/", self.index, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/lan.css", self.css, methods=["GET"]),
            Route("/reports/{report_id:int}/pdf", self.pdf, methods=["GET"]),
            Route("/reports/{report_id:int}/acknowledge", self.ack_form, methods=["GET"]),
            Route("/reports/{report_id:int}/acknowledge", self.acknowledge, methods=["POST"]),
        ]
        self.starlette = Starlette(routes=routes)
        self.app = SecurityHeaders(self.starlette)

    # --- helpers ---

    def _lang(self, request: Request) -> str:
        wanted = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE) or ""
        return "en" if wanted == "en" else "zh-CN"

    def _t(self, lang: str, key: str, **values: object) -> str:
        text = TEXTS[lang].get(key, key)
        return text.format(**{k: esc(v) for k, v in values.items()}) if values else esc(text)

    def _page(
        self,
        request: Request,
        lang: str,
        body: str,
        *,
        session: LanSession | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        other = "en" if lang == "zh-CN" else "zh-CN"
        # The clinic's name from the hub (synced with the staff list); its code until then.
        clinic = self.store.meta("clinic_name") or self.clinic
        query = dict(request.query_params)
        query["lang"] = other
        switch = (
            f'<a href="{esc(request.url.path)}?{esc(urlencode(query))}" lang="{other}" '
            f'data-testid="lan-lang-switch">{self._t(lang, "lang_other")}</a>'
        )
        user = ""
        if session is not None:
            user = (
                '<span data-testid="lan-user">'
                f"{esc(session.display_name or session.username)}</span>"
                f'<form class="inline" method="post" action="/logout">'
                f'<input type="hidden" name="csrf" value="{esc(session.csrf)}">'
                f'<button type="submit" data-testid="lan-logout">{self._t(lang, "logout")}</button>'
                "</form>"
            )
        document = (
            f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{self._t(lang, 'title')} — {esc(clinic)}</title>"
            '<link rel="stylesheet" href="/lan.css"></head><body>'
            f"<header><h1>{self._t(lang, 'title')} · {esc(clinic)}</h1>{user}{switch}</header>"
            f"<main>{body}</main></body></html>"
        )
        response = HTMLResponse(document, status_code=status)
        if request.query_params.get("lang") in ("en", "zh-CN"):
            response.set_cookie(
                LANG_COOKIE,
                lang,
                max_age=365 * 86400,
                httponly=True,
                samesite="strict",
                secure=self.secure_cookie,
            )
        return response

    def _session(self, request: Request) -> LanSession | None:
        token = request.cookies.get(SESSION_COOKIE, "")
        if not token:
            return None
        now = time.time()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            expired = (
                now - session.last_seen > SESSION_IDLE_SECONDS
                or now - session.created > SESSION_MAX_SECONDS
            )
            if expired:
                del self._sessions[token]
                return None
        # Removed from the hub's staff list, or a new password: signed out at the next sync.
        if not self.verifier.still_valid(session.username, session.password_hash):
            with self._lock:
                self._sessions.pop(token, None)
            return None
        session.last_seen = now
        return session

    def _to_login(self, request: Request) -> Response:
        return RedirectResponse("/login", status_code=303)

    async def _form(self, request: Request) -> dict[str, str] | None:
        """The urlencoded form of a POST (at most MAX_FORM_BYTES); None if not acceptable."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return None
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return None
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            return None
        return {k: v[0] for k, v in parsed.items()}

    def _same_origin(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return True  # some browsers omit it (or say "null"); the CSRF token decides
        host = request.headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")

    def _csrf_ok(self, session: LanSession, form: dict[str, str]) -> bool:
        return hmac.compare_digest(session.csrf.encode(), form.get("csrf", "").encode())

    def _error(self, request: Request, lang: str, key: str, status: int) -> HTMLResponse:
        session = self._session(request)
        body = f'<div class="alert error" data-testid="lan-error">{self._t(lang, key)}</div>'
        if session is not None:
            body += f'<p><a href="/">{self._t(lang, "title")}</a></p>'
        return self._page(request, lang, body, session=session, status=status)

    # --- routes ---

    async def css(self, request: Request) -> Response:
        return Response(CSS, media_type="text/css")

    async def login_form(self, request: Request) -> Response:
        lang = self._lang(request)
        if self._session(request) is not None:
            return RedirectResponse("/", status_code=303)
        return self._page(request, lang, self._login_body(lang, ""))

    def _login_body(self, lang: str, error_key: str, username: str = "") -> str:
        error = (
            f'<div class="alert error" data-testid="lan-login-error" role="alert">'
            f"{self._t(lang, error_key)}</div>"
            if error_key
            else ""
        )
        return (
            f'<div class="box"><h2>{self._t(lang, "login")}</h2>'
            f'<p class="muted">{self._t(lang, "login_hint")}</p>{error}'
            '<form method="post" action="/login" autocomplete="off">'
            f'<label for="username">{self._t(lang, "username")}</label>'
            f'<input type="text" id="username" name="username" maxlength="64" required '
            f'value="{esc(username)}" data-testid="lan-login-username">'
            f'<label for="password">{self._t(lang, "password")}</label>'
            '<input type="password" id="password" name="password" maxlength="1024" required '
            'data-testid="lan-login-password">'
            f'<button class="primary" type="submit" data-testid="lan-login-submit">'
            f"{self._t(lang, 'login')}</button></form></div>"
        )

    async def login(self, request: Request) -> Response:
        lang = self._lang(request)
        form = await self._form(request)
        if form is None or not self._same_origin(request):
            return self._error(request, lang, "bad_request", 400)
        username = form.get("username", "").strip()[:64]
        password = form.get("password", "")[:1024]
        address = request.client.host if request.client else "-"
        now = time.monotonic()
        with self._lock:
            blocked = self._by_address.blocked(address, now) or self._by_user.blocked(
                username.lower(), now
            )
        if blocked:
            log.warning("LAN page: sign-in throttled (address %s)", address)
            return self._page(
                request, lang, self._login_body(lang, "too_many", username), status=429
            )
        member: StaffMember | None = None
        if username and password:
            member = await _in_thread(self.verifier.verify, username, password)
        if member is None:
            with self._lock:
                self._by_address.fail(address, now)
                self._by_user.fail(username.lower(), now)
            log.info("LAN page: failed sign-in from %s", address)
            return self._page(
                request, lang, self._login_body(lang, "bad_login", username), status=401
            )
        token = secrets.token_urlsafe(32)
        wall = time.time()
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda k: self._sessions[k].last_seen)
                del self._sessions[oldest]
            self._sessions[token] = LanSession(
                username=member.username,
                display_name=member.display_name,
                password_hash=member.password_hash,
                csrf=secrets.token_urlsafe(32),
                created=wall,
                last_seen=wall,
            )
        log.info("LAN page: %s signed in from %s", member.username, address)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookie,
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        lang = self._lang(request)
        session = self._session(request)
        form = await self._form(request)
        if session is None:
            return self._to_login(request)
        if form is None or not self._same_origin(request) or not self._csrf_ok(session, form):
            return self._error(request, lang, "forbidden", 403)
        with self._lock:
            self._sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def index(self, request: Request) -> Response:
        lang = self._lang(request)
        session = self._session(request)
        if session is None:
            return self._to_login(request)
        search = request.query_params.get("q", "")[:64]
        reports = self.store.recent(search=search)
        open_count = sum(1 for r in reports if r.awaiting_acknowledgement)
        notice = ""
        if request.query_params.get("acked"):
            notice = (
                f'<div class="alert ok" data-testid="lan-notice">{self._t(lang, "ack_done")}</div>'
            )
        if open_count:
            notice += (
                f'<div class="alert error" data-testid="lan-critical-open">'
                f"{self._t(lang, 'open_criticals', n=open_count)}</div>"
            )
        rows = "".join(self._row(lang, r) for r in reports)
        table = (
            f'<table data-testid="lan-reports"><thead><tr><th>{self._t(lang, "patient")}</th>'
            f"<th>{self._t(lang, 'study')}</th><th>{self._t(lang, 'signed_at')}</th>"
            f"<th>{self._t(lang, 'report')}</th></tr></thead><tbody>{rows}</tbody></table>"
            if reports
            else f'<p data-testid="lan-empty">{self._t(lang, "empty")}</p>'
        )
        body = (
            f'<p class="muted">{self._t(lang, "intro")}</p>{notice}'
            '<form method="get" action="/" role="search">'
            f'<input type="search" name="q" maxlength="64" value="{esc(search)}" '
            f'placeholder="{self._t(lang, "search")}" aria-label="{self._t(lang, "search")}" '
            f'data-testid="lan-search"> <button type="submit">{self._t(lang, "find")}</button>'
            f"</form>{table}"
        )
        return self._page(request, lang, body, session=session)

    def _row(self, lang: str, r: HeldReport) -> str:
        kind = self._t(lang, "addendum" if r.kind == "addendum" else "report")
        status = ""
        if r.critical:
            band = self._t(lang, "critical", category=r.critical_category or "—")
            status = f'<div><span class="band">{band}</span> '
            if r.acknowledged_at:
                when = local_time(r.acknowledged_at, self.zone)
                status += (
                    f'<span class="acked" data-testid="lan-ack-status" '
                    f'data-acknowledged-via="{esc(r.acknowledged_via)}">'
                    f"{self._t(lang, 'acknowledged', time=when)}"
                )
                if r.acknowledged_by:
                    status += self._t(lang, "ack_by", name=r.acknowledged_by)
                if r.acknowledged_via:
                    where = TEXTS[lang].get("via." + r.acknowledged_via, r.acknowledged_via)
                    status += self._t(lang, "ack_where", where=where)
                if r.hub_acknowledged_at:
                    status += ""  # the hub holds an acknowledgement: nothing waits
                elif r.ack_state == "local":
                    status += self._t(lang, "ack_local")
                elif r.ack_state == "pending":
                    status += self._t(lang, "ack_waiting")
                elif r.ack_state == "refused":
                    status += self._t(lang, "ack_refused", error="—")
                status += "</span>"
            else:
                status += (
                    f"<strong>{self._t(lang, 'critical_open')}</strong> "
                    f'<a href="/reports/{r.id}/acknowledge" data-testid="lan-ack-link">'
                    f"{self._t(lang, 'acknowledge')}</a>"
                )
            status += "</div>"
        if r.replaced_at is not None:
            status += (
                f'<div class="muted" data-testid="lan-replaced">{self._t(lang, "replaced")}</div>'
            )
        css = ' class="critical-open"' if r.awaiting_acknowledgement else ""
        patient = person_name(r.patient_name)
        return (
            f'<tr{css} data-testid="lan-report-row" data-report-id="{r.id}" '
            f'data-critical="{str(r.critical).lower()}" '
            f'data-acknowledged="{str(bool(r.acknowledged_at)).lower()}">'
            f'<td><strong>{esc(patient)}</strong><br><span class="muted">{esc(r.patient_id)} '
            f"{esc(TEXTS[lang].get('sex.' + r.patient_sex, r.patient_sex))} "
            f"{esc(dicom_date(r.patient_birth_date))}</span></td>"
            f"<td>{esc(dicom_date(r.study_date))} {esc(r.modalities)}<br>"
            f'<span class="muted">{esc(r.study_description)} {esc(r.accession_number)}</span></td>'
            f"<td>{esc(local_time(r.signed_at, self.zone))}<br>"
            f'<span class="muted">{esc(r.signer_name)}</span></td>'
            f'<td>{kind} · <a href="/reports/{r.id}/pdf" target="_blank" rel="noopener" '
            f'data-testid="lan-open-pdf">{self._t(lang, "print")}</a> · '
            f'<a href="/reports/{r.id}/pdf?download=1" data-testid="lan-download-pdf">'
            f"{self._t(lang, 'download')}</a>{status}</td></tr>"
        )

    async def pdf(self, request: Request) -> Response:
        lang = self._lang(request)
        session = self._session(request)
        if session is None:
            return self._to_login(request)
        report_id = int(request.path_params["report_id"])
        held = self.store.held(report_id)
        path = self.store.pdf_path(report_id)
        if held is None or not path.is_file():
            return self._error(request, lang, "not_found", 404)
        name = f"report-{report_id}.pdf"
        disposition = "attachment" if request.query_params.get("download") else "inline"
        return FileResponse(
            path,
            media_type="application/pdf",
            headers={
                "Content-Disposition": f'{disposition}; filename="{name}"; '
                f"filename*=UTF-8''{quote(name)}"
            },
        )

    async def ack_form(self, request: Request) -> Response:
        lang = self._lang(request)
        session = self._session(request)
        if session is None:
            return self._to_login(request)
        held = self.store.held(int(request.path_params["report_id"]))
        if held is None:
            return self._error(request, lang, "not_found", 404)
        if not held.awaiting_acknowledgement:
            return self._error(request, lang, "ack_not_open", 409)
        return self._page(request, lang, self._ack_body(lang, session, held, ""), session=session)

    def _ack_body(self, lang: str, session: LanSession, held: HeldReport, error_key: str) -> str:
        options = "".join(
            f'<option value="{m}">{self._t(lang, "method." + m)}</option>' for m in ACK_METHODS
        )
        error = (
            f'<div class="alert error" data-testid="lan-ack-error">{self._t(lang, error_key)}</div>'
            if error_key
            else ""
        )
        return (
            f'<div class="box"><h2>{self._t(lang, "ack_title")}</h2>'
            '<p><span class="band">'
            f"{self._t(lang, 'critical', category=held.critical_category or '—')}"
            f"</span></p><p><strong>{esc(person_name(held.patient_name))}</strong> "
            f"{esc(held.patient_id)} · {esc(dicom_date(held.study_date))} "
            f"{esc(held.modalities)}</p>"
            f'<p><a href="/reports/{held.id}/pdf" target="_blank" rel="noopener">'
            f"{self._t(lang, 'print')}</a></p>{error}"
            f'<form method="post" action="/reports/{held.id}/acknowledge">'
            f'<input type="hidden" name="csrf" value="{esc(session.csrf)}">'
            f'<label for="method">{self._t(lang, "ack_method")}</label>'
            f'<select id="method" name="method" data-testid="lan-ack-method">{options}</select>'
            f'<label for="read_back">{self._t(lang, "ack_read_back")}</label>'
            '<textarea id="read_back" name="read_back" rows="4" maxlength="4000" required '
            'data-testid="lan-ack-read-back"></textarea>'
            f'<button class="primary" type="submit" data-testid="lan-ack-submit">'
            f"{self._t(lang, 'ack_confirm')}</button> "
            f'<a href="/">{self._t(lang, "ack_cancel")}</a></form></div>'
        )

    async def acknowledge(self, request: Request) -> Response:
        lang = self._lang(request)
        session = self._session(request)
        form = await self._form(request)
        if session is None:
            return self._to_login(request)
        if form is None or not self._same_origin(request) or not self._csrf_ok(session, form):
            log.warning("LAN page: acknowledgement refused (CSRF) for %s", session.username)
            return self._error(request, lang, "forbidden", 403)
        report_id = int(request.path_params["report_id"])
        held = self.store.held(report_id)
        if held is None:
            return self._error(request, lang, "not_found", 404)
        if not held.awaiting_acknowledgement:
            return self._error(request, lang, "ack_not_open", 409)
        method = form.get("method", "")
        read_back = form.get("read_back", "").strip()
        if method not in ACK_METHODS or not read_back or len(read_back) > 4000:
            return self._page(
                request,
                lang,
                self._ack_body(lang, session, held, "ack_need"),
                session=session,
                status=422,
            )
        if not self.store.acknowledge(
            report_id,
            username=session.username,
            display_name=session.display_name,
            method=method,
            read_back=read_back,
        ):
            return self._error(request, lang, "ack_not_open", 409)
        log.info("LAN page: report %d acknowledged by %s", report_id, session.username)
        return RedirectResponse(f"/?acked={report_id}", status_code=303)


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


class LanPageServer:
    """uvicorn serving a :class:`LanPage` in a thread of the gateway's main process."""

    def __init__(
        self,
        page: LanPage,
        *,
        host: str,
        port: int,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
    ) -> None:
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError(
                "The LAN page's HTTPS needs both lan_page_tls_cert_file and _key_file."
            )
        self.host, self.port = host, port
        self.scheme = "https" if tls_cert_file else "http"
        config = uvicorn.Config(
            page.app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,  # URLs carry search terms: no patient data in logs
            lifespan="off",
            ssl_certfile=str(tls_cert_file) if tls_cert_file else None,
            ssl_keyfile=str(tls_key_file) if tls_key_file else None,
            server_header=False,
            timeout_keep_alive=5,
            limit_concurrency=64,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="lan-page", daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/"

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The LAN page did not start on {self.host}:{self.port}.")
            time.sleep(0.02)
        log.info("LAN page on %s", self.url)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
