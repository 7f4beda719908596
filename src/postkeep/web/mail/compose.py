"""The webmail's compose pages: a new message, a reply, a reply-all, a forward, a draft.

- ``GET /mail/compose`` the form (From among the addresses the account may send as: its own
  and its "send as" grants; To, Cc, Bcc, Subject, the text, attachments as file inputs);
  ``?reply=MAILBOXID/UID&mode=reply|all|forward`` starts from one of the account's messages
  (`build.reply_fields`; a forward offers its attachments again), ``?draft=MAILBOXID/UID``
  from a saved draft (its fields and attachments). An id not of the account's own is 404.
- ``POST /mail/compose/send``: the message is made (`build.build`: a bad address, a line break
  in a header field refuses the form, 400, nothing sent) and handed to the submission
  pipeline in process (`Submit`, `postkeep.delivery.submit` behind it: sender ownership, part
  sizes, sending quotas, outbound filters, DKIM, local delivery and the outbound queue, as
  over SMTP). Its refusal is shown with the pipeline's reply (nothing sent); once it is
  taken, a copy (with Bcc) goes into \\Sent with \\Seen, the draft it was is removed, and the
  browser is sent (303) to the inbox. A message the filters held is in the quarantine: no
  copy in Sent.
- ``POST /mail/compose/draft``: the form saved as a \\Draft message in \\Drafts, replacing the
  draft it was (`drafts`), then shown again (303 to ``?draft=`` the new one).

The two POSTs are multipart/form-data forms of at most `web.max_compose_size` (413 past it;
`postkeep.web.app`), their files kept in memory. Attachments already in a draft or a forwarded
message are kept by checkbox (``keep_N``) from the message named by ``source``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from aiohttp import web

from postkeep import log
from postkeep.policy.submission import Submitted, owned_addresses
from postkeep.store.api import Account, Flag, MailStore, SpecialUse
from postkeep.web.app import client_ip, current, files_of, form_of
from postkeep.web.mail.build import (
    Attachment,
    Built,
    Fields,
    FormError,
    attachment_of,
    attachments_of,
    build,
    draft_fields,
    parse,
    reply_fields,
)
from postkeep.web.mail.drafts import Mailboxes, OverQuota, Own
from postkeep.web.pages import Pages

logger = log.get("web")

UPLOAD_PATHS = ("/mail/compose/send", "/mail/compose/draft")
MODES = ("reply", "all", "forward")
NOTICES = {"draft": "The draft was saved."}


class Submit(Protocol):
    """The submission pipeline, in process (`postkeep.delivery.submit.LocalSubmission`)."""

    async def __call__(self, login: Account, *, ip: str, tls: tuple[str, str, int] | None,
                       mail_from: str, recipients: list[str], data: bytes, smtputf8: bool,
                       message_id: str) -> Submitted: ...


def _tls_of(request: web.Request) -> tuple[str, str, int] | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    name, version, bits = ssl_object.cipher()
    return version, name, bits


class ComposePages:
    """The handlers of the module docstring."""

    def __init__(self, pages: Pages, store: MailStore, submit: Submit) -> None:
        self.pages = pages
        self.store = store
        self.boxes = Mailboxes(store)
        self.submit = submit
        self.hostname = pages.cfg.server.hostname

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/mail/compose", self.compose_form),
            web.post("/mail/compose/send", self.send),
            web.post("/mail/compose/draft", self.save_draft),
        ]

    async def _senders(self, account: Account) -> list[str]:
        return list(dict.fromkeys([account.address,
                                   *await self.store.list_send_as(account.address)]))

    async def _page(self, request: web.Request, account: Account, fields: Fields, *,
                    status: int = 200, error: str = "", notice: str = "", source: str = "",
                    kept: list[Attachment] | None = None, draft: str = "") -> web.Response:
        found = current(request)
        assert found is not None
        senders = await self._senders(account)
        return self.pages.render(
            "compose.html", status, csrf=found.csrf, account=account.address, fields=fields,
            senders=senders, error=error, notice=notice, source=source, draft=draft,
            kept=list(enumerate(kept or [])),
            limit=self.pages.cfg.web.max_compose_size)

    async def compose_form(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        query = request.query
        notice = NOTICES.get(query.get("done", ""), "")
        if "draft" in query:
            draft = await self.boxes.own(account, query["draft"])
            if draft is None or not draft.is_draft:
                raise web.HTTPNotFound(text="No such draft.\n")
            fields = draft_fields(draft.data)
            return await self._page(request, account, fields, notice=notice, source=draft.ref,
                                    kept=attachments_of(parse(draft.data)), draft=draft.ref)
        if "reply" in query:
            mode = query.get("mode", "reply")
            if mode not in MODES:
                raise web.HTTPBadRequest(text="mode is reply, all or forward.\n")
            original = await self.boxes.own(account, query["reply"])
            if original is None:
                raise web.HTTPNotFound(text="No such message.\n")
            own = owned_addresses(account, await self.store.list_aliases(),
                                  await self.store.list_send_as(account.address))
            fields = reply_fields(original.data, mode, own, account.address)
            if mode == "forward":
                return await self._page(request, account, fields, source=original.ref,
                                        kept=attachments_of(parse(original.data)))
            return await self._page(request, account, fields)
        return await self._page(request, account, Fields(sender=account.address))

    # -- the posted form -----------------------------------------------------------------------

    async def _posted(self, request: web.Request, account: Account
                      ) -> tuple[Fields, list[Attachment], Own | None, Own | None]:
        """The form's fields, its attachments (those kept of `source`, then the uploads),
        the source message and the draft it replaces (each the account's own, or None)."""
        form = form_of(request)
        fields = Fields(**{name: form.get(name, "") for name in (
            "sender", "to", "cc", "bcc", "subject", "body", "in_reply_to", "references")})
        source = await self.boxes.own(account, form.get("source", ""))
        attachments: list[Attachment] = []
        if source is not None:
            attachments += [a for i, a in enumerate(attachments_of(parse(source.data)))
                            if form.get(f"keep_{i}") == "on"]
        for upload in files_of(request):
            if upload.field == "attachment" and (upload.filename or upload.data):
                attachments.append(attachment_of(upload.filename, upload.content_type,
                                                 upload.data))
        draft = await self.boxes.own(account, form.get("draft", ""))
        return fields, attachments, source, draft if draft is not None and draft.is_draft \
            else None

    async def _refuse(self, request: web.Request, account: Account, fields: Fields,
                      status: int, error: str, source: Own | None,
                      draft: Own | None) -> web.Response:
        logger.info("compose refused ip=%s user=%s code=%d reason=%s", client_ip(request),
                    log.quote(account.address), status, log.quote(error))
        kept = attachments_of(parse(source.data)) if source is not None else []
        return await self._page(request, account, fields, status=status, error=error,
                                source=source.ref if source else "", kept=kept,
                                draft=draft.ref if draft else "")

    async def send(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        fields, attachments, source, draft = await self._posted(request, account)
        try:
            built = build(fields, attachments, hostname=self.hostname)
        except FormError as e:
            return await self._refuse(request, account, fields, 400, str(e), source, draft)
        ip = client_ip(request)
        outcome = await self.submit(
            account, ip=ip, tls=_tls_of(request), mail_from=built.sender,
            recipients=built.recipients, data=built.sent, smtputf8=built.smtputf8,
            message_id=built.message_id)
        reply = outcome.verdict.reply
        if not outcome.verdict.accepted:
            return await self._refuse(request, account, fields, 400,
                                      f"Not sent: {reply.code} {reply.enhanced} {reply.text}",
                                      source, draft)
        done = "held" if outcome.held else await self._keep_sent(account, built, ip)
        if draft is not None:
            await self.boxes.remove(account, draft)
        inbox = await self.boxes.inbox(account)
        target = f"/mail/m/{inbox.id}" if inbox is not None else "/mail/compose"
        raise web.HTTPSeeOther(f"{target}?done={done}")

    async def _keep_sent(self, account: Account, built: Built, ip: str) -> str:
        """A copy in \\Sent, \\Seen: the notice to show ("sent", or "sent-nocopy" when the
        copy could not be kept: the message went all the same)."""
        try:
            box = await self.boxes.special(account, SpecialUse.SENT, "Sent")
            await self.boxes.append(account, box, built.kept, Flag.SEEN, ip)
        except OverQuota:
            logger.warning("sent copy not kept ip=%s user=%s msgid=%s reason=%s", ip,
                           log.quote(account.address), log.quote(built.message_id),
                           log.quote("over quota"))
            return "sent-nocopy"
        return "sent"

    async def save_draft(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        fields, attachments, source, draft = await self._posted(request, account)
        if not fields.sender:
            fields = replace(fields, sender=account.address)
        try:
            built = build(fields, attachments, hostname=self.hostname, draft=True)
        except FormError as e:
            return await self._refuse(request, account, fields, 400, str(e), source, draft)
        ip = client_ip(request)
        box = await self.boxes.special(account, SpecialUse.DRAFTS, "Drafts")
        try:
            uid = await self.boxes.append(account, box, built.kept, Flag.DRAFT | Flag.SEEN, ip)
        except OverQuota:
            return await self._refuse(request, account, fields, 400,
                                      "Not saved: your mailbox is over its quota.", source,
                                      draft)
        if draft is not None:
            await self.boxes.remove(account, draft)
        logger.info("draft saved ip=%s user=%s mailbox=%d uid=%d", ip,
                    log.quote(account.address), box.id, uid)
        raise web.HTTPSeeOther(f"/mail/compose?draft={box.id}/{uid}&done=draft")
