// postkeep webmail: progressive enhancement only (every action works without it, as a form).
// New mail pushed by /mail/events (Server-Sent Events): the unread counts updated and the open
// mailbox's list re-fetched in place; actions sent with fetch; keyboard shortcuts.
//
// Markup it reads (docs/architecture.md, "Webmail"):
//   <meta name="csrf" content="...">       (else the first input[name=csrf] of the page)
//   #message-list[data-mailbox=ID]          the open mailbox's list, replaced on news
//   #mailbox-list                           the sidebar, replaced when mailboxes change
//   [data-uid=UID] rows in #message-list, each with input[name=uid] and a link a[data-open]
//     (else its first a[href]); data-flagged="1" on a flagged row
//   #message-view[data-mailbox=ID][data-uid=UID]   the reading view
//   [data-unread-for=ID], [data-total-for=ID]      counts (text replaced)
//   input[data-select-all]                  checks every input[name=uid]
//   form[action="/mail/actions"]            posted with fetch (Accept: application/json)
//   #mail-search (else input[type=search])  focused by "/"
"use strict";
(() => {
  const list = () => document.getElementById("message-list");
  const view = document.getElementById("message-view");
  const openBox = () => (list() || view || document.body).dataset.mailbox || "";
  const rows = () => Array.from(document.querySelectorAll("#message-list [data-uid]"));
  let current = -1;

  function csrf() {
    const meta = document.querySelector('meta[name="csrf"]');
    if (meta) return meta.getAttribute("content") || "";
    const input = document.querySelector('input[name="csrf"]');
    return input ? input.value : "";
  }

  // -- counts and the list, kept fresh -----------------------------------------------------
  function setCount(kind, box, value) {
    document.querySelectorAll(`[data-${kind}-for="${box}"]`).forEach((el) => {
      el.textContent = String(value);
      el.classList.toggle("zero", value === 0);
    });
  }

  function counts(row) {
    setCount("unread", row.mailbox, row.unread);
    setCount("total", row.mailbox, row.total);
  }

  let refreshing = null;
  function refresh() { // debounced: a burst of events is one fetch
    if (refreshing !== null) return;
    refreshing = window.setTimeout(async () => {
      refreshing = null;
      const response = await fetch(window.location.href, {headers: {Accept: "text/html"}});
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const checked = new Set(Array.from(document.querySelectorAll('input[name="uid"]:checked'))
        .map((box) => box.value));
      const uid = current >= 0 && rows()[current] ? rows()[current].dataset.uid : null;
      for (const id of ["message-list", "mailbox-list"]) {
        const now = document.getElementById(id);
        const next = fresh.getElementById(id);
        if (now && next) now.replaceWith(document.importNode(next, true));
      }
      document.querySelectorAll('input[name="uid"]').forEach((box) => {
        box.checked = checked.has(box.value);
      });
      current = rows().findIndex((row) => row.dataset.uid === uid);
      mark();
    }, 300);
  }

  if (window.EventSource) {
    const events = new EventSource("/mail/events");
    let first = true;
    events.addEventListener("counts", (event) => {
      JSON.parse(event.data).mailboxes.forEach(counts);
      if (!first) refresh(); // reconnected, or events were dropped: news may be missed
      first = false;
    });
    events.addEventListener("mailbox", (event) => {
      const data = JSON.parse(event.data);
      if (data.kind === "mailboxes") {
        refresh();
        return;
      }
      counts(data);
      if (String(data.mailbox) === openBox() && list()) refresh();
    });
    events.addEventListener("end", () => events.close()); // logged out, or the session ended
  }

  // -- actions -----------------------------------------------------------------------------
  async function send(fields, back) {
    const body = new URLSearchParams(fields);
    body.set("csrf", csrf());
    const response = await fetch("/mail/actions", {
      method: "POST", body, headers: {Accept: "application/json"},
    });
    const answer = await response.json().catch(() => ({ok: false, error: response.statusText}));
    if (!answer.ok) {
      window.alert(`Not done: ${answer.error}`);
      return;
    }
    if (back) window.location.assign(answer.back);
    else refresh();
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.getAttribute("action") !== "/mail/actions") {
      return;
    }
    event.preventDefault();
    const fields = new FormData(form, event.submitter || undefined);
    send(Array.from(fields, ([k, v]) => [k, String(v)]), Boolean(view));
  });

  document.addEventListener("change", (event) => {
    const box = event.target;
    if (box instanceof HTMLInputElement && box.hasAttribute("data-select-all")) {
      document.querySelectorAll('input[name="uid"]').forEach((each) => {
        each.checked = box.checked;
      });
    }
  });

  function chosen() { // the checked messages, else the current row, else the one read
    const checked = Array.from(document.querySelectorAll('input[name="uid"]:checked'))
      .map((box) => box.value);
    if (checked.length) return checked;
    if (current >= 0 && rows()[current]) return [rows()[current].dataset.uid];
    return view ? [view.dataset.uid] : [];
  }

  function act(action) {
    const uids = chosen();
    if (!uids.length || !openBox()) return;
    let name = action;
    if (action === "flag" && uids.length === 1 && current >= 0 && rows()[current]) {
      name = rows()[current].dataset.flagged === "1" ? "unflag" : "flag";
    }
    const fields = [["mailbox", openBox()], ["action", name], ...uids.map((u) => ["uid", u])];
    send(fields, Boolean(view) && name !== "flag" && name !== "unflag");
  }

  // -- keyboard ----------------------------------------------------------------------------
  function mark() {
    rows().forEach((row, i) => row.classList.toggle("current", i === current));
    const row = rows()[current];
    if (row) row.scrollIntoView({block: "nearest"});
  }

  function move(by) {
    const count = rows().length;
    if (!count) return;
    current = Math.max(0, Math.min(count - 1, current + by));
    mark();
  }

  function openCurrent() {
    const row = rows()[current];
    const link = row && (row.querySelector("a[data-open]") || row.querySelector("a[href]"));
    if (link) window.location.assign(link.href);
  }

  function reply() {
    const row = rows()[current];
    const uid = row ? row.dataset.uid : view ? view.dataset.uid : null;
    if (uid && openBox()) {
      window.location.assign(`/mail/compose?reply=${encodeURIComponent(`${openBox()}/${uid}`)}`);
    }
  }

  let help = null;
  function showHelp() {
    if (!help) {
      help = document.createElement("dialog");
      help.id = "mail-help";
      const title = document.createElement("h2");
      title.textContent = "Keyboard shortcuts";
      const table = document.createElement("dl");
      for (const [key, what] of [["j / k", "next / previous message"], ["o, Enter", "open"],
        ["u", "back to the list"], ["e", "archive"], ["#", "delete"], ["!", "junk"],
        ["s", "flag or unflag"], ["c", "compose"], ["r", "reply"], ["/", "search"],
        ["?", "this help"], ["Esc", "close"]]) {
        const dt = document.createElement("dt");
        dt.textContent = key;
        const dd = document.createElement("dd");
        dd.textContent = what;
        table.append(dt, dd);
      }
      const close = document.createElement("button");
      close.type = "button";
      close.textContent = "Close";
      close.addEventListener("click", () => help.close());
      help.append(title, table, close);
      document.body.append(help);
    }
    help.showModal();
  }

  const KEYS = {
    j: () => move(1), k: () => move(-1), o: openCurrent, Enter: openCurrent,
    u: () => { if (view && openBox()) window.location.assign(`/mail/m/${openBox()}`); },
    e: () => act("archive"), "#": () => act("delete"), "!": () => act("junk"),
    s: () => act("flag"), c: () => window.location.assign("/mail/compose"), r: reply,
    "/": () => {
      const search = document.getElementById("mail-search")
        || document.querySelector('input[type="search"]');
      if (search) search.focus();
    },
    "?": showHelp,
  };

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const target = event.target;
    if (target instanceof HTMLElement && (target.isContentEditable
        || ["TEXTAREA", "SELECT"].includes(target.tagName)
        || (target instanceof HTMLInputElement
            && !["checkbox", "radio"].includes(target.type)))) return; // typing there
    if (help && help.open) return; // the dialog: Esc closes it
    if (event.key === "Enter" && (current < 0 || (target instanceof HTMLElement
        && ["A", "BUTTON"].includes(target.tagName)))) return; // their own Enter
    const handler = KEYS[event.key];
    if (handler) {
      event.preventDefault();
      handler();
    }
  });
})();
