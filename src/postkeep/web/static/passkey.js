// postkeep passkeys (W3C WebAuthn Level 3): a button with data-passkey="create" or "get" asks
// its data-options URL for the options (a form post with the page's CSRF token, answered
// JSON), runs navigator.credentials.create() or get(), puts the credential's JSON (§5.1.8
// toJSON) into its form's "response" field and submits the form. No inline script anywhere.
"use strict";
(() => {
  const decode = (text) => {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0)).buffer;
  };
  const encode = (buffer) => {
    let raw = "";
    for (const byte of new Uint8Array(buffer)) {
      raw += String.fromCharCode(byte);
    }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  const descriptors = (list) => (list || []).map((c) => ({ ...c, id: decode(c.id) }));

  const creationOptions = (o) => ({
    ...o,
    challenge: decode(o.challenge),
    user: { ...o.user, id: decode(o.user.id) },
    excludeCredentials: descriptors(o.excludeCredentials),
  });
  const requestOptions = (o) => ({
    ...o,
    challenge: decode(o.challenge),
    allowCredentials: descriptors(o.allowCredentials),
  });

  const asJSON = (credential) => {
    const r = credential.response;
    const response = { clientDataJSON: encode(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = encode(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = encode(r.authenticatorData);
      response.signature = encode(r.signature);
      if (r.userHandle) {
        response.userHandle = encode(r.userHandle);
      }
    }
    return JSON.stringify({
      id: credential.id,
      rawId: encode(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response,
    });
  };

  const say = (form, text) => {
    let line = form.querySelector(".passkey-error");
    if (!line) {
      line = document.createElement("p");
      line.className = "passkey-error";
      line.setAttribute("role", "alert");
      form.appendChild(line);
    }
    line.textContent = text;
  };

  const run = async (button) => {
    const form = button.form;
    if (!window.PublicKeyCredential) {
      say(form, "This browser has no passkey support.");
      return;
    }
    const body = new URLSearchParams({ csrf: form.elements.csrf.value });
    const answer = await fetch(button.dataset.options, {
      method: "POST", body, credentials: "same-origin",
    });
    if (!answer.ok) {
      say(form, "No passkey can be used here now.");
      return;
    }
    const options = await answer.json();
    const credential = button.dataset.passkey === "create"
      ? await navigator.credentials.create({ publicKey: creationOptions(options) })
      : await navigator.credentials.get({ publicKey: requestOptions(options) });
    form.elements.response.value = asJSON(credential);
    form.submit();
  };

  document.addEventListener("click", (event) => {
    const button = event.target;
    if (!(button instanceof HTMLButtonElement) || !button.dataset.passkey) {
      return;
    }
    event.preventDefault();
    button.disabled = true;
    run(button).catch((error) => {
      say(button.form, `The passkey did not work (${error.name || "error"}).`);
    }).finally(() => {
      button.disabled = false;
    });
  });
})();
