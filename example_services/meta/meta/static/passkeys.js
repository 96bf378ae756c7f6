// Passkey ceremonies (WebAuthn) of meta's pages. A page opts in with these elements:
//   form#passkey-add[data-finish]   adding a passkey (Security page): the form posts its
//                                   fields for the options, the new credential goes to data-finish
//   #passkey-login[data-options][data-finish]   "Sign in with a passkey" on the login page
//   #passkey-second[data-options][data-finish]  the passkey as the second factor
// Each stays hidden unless this browser can make or use passkeys here. The server answers
// {"redirect": URL} or the standard error body {"errors": [{"reason": ...}]}.
(() => {
  "use strict";

  const supported =
    window.isSecureContext && window.PublicKeyCredential !== undefined && !!navigator.credentials;

  // -- base64url (RFC 4648, section 5, no padding) <-> bytes
  function fromBase64url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const raw = atob(padded);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let raw = "";
    for (let i = 0; i < bytes.length; i += 1) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // -- the options as the server sends them (JSON) -> what the browser's API takes
  function descriptors(list) {
    return (list || []).map((item) => ({ ...item, id: fromBase64url(item.id) }));
  }

  function creationOptions(json) {
    return {
      ...json,
      challenge: fromBase64url(json.challenge),
      user: { ...json.user, id: fromBase64url(json.user.id) },
      excludeCredentials: descriptors(json.excludeCredentials),
    };
  }

  function requestOptions(json) {
    return {
      ...json,
      challenge: fromBase64url(json.challenge),
      allowCredentials: descriptors(json.allowCredentials),
    };
  }

  // -- the browser's credential -> JSON for the server
  function registrationJSON(credential) {
    const response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: {
        clientDataJSON: toBase64url(response.clientDataJSON),
        attestationObject: toBase64url(response.attestationObject),
        transports: typeof response.getTransports === "function" ? response.getTransports() : [],
      },
    };
  }

  function assertionJSON(credential) {
    const response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: {
        clientDataJSON: toBase64url(response.clientDataJSON),
        authenticatorData: toBase64url(response.authenticatorData),
        signature: toBase64url(response.signature),
        userHandle: response.userHandle ? toBase64url(response.userHandle) : undefined,
      },
    };
  }

  // -- talking to meta
  function csrfToken() {
    const input = document.querySelector("input[name=csrf_token]");
    return input ? input.value : "";
  }

  async function post(url, body) {
    const headers = { Accept: "application/json", "X-CSRFToken": csrfToken() };
    let payload = body;
    if (!(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body || {});
    }
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers,
      body: payload,
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const reasons = data && Array.isArray(data.errors) ? data.errors.map((e) => e.reason) : [];
      throw new Error(reasons.join(" ") || `The request failed (${response.status}).`);
    }
    return data;
  }

  function browserError(error) {
    if (error && error.name === "NotAllowedError") {
      return "The passkey was not used: it was cancelled, or the time ran out.";
    }
    if (error && error.name === "InvalidStateError") {
      return "This device already has a passkey for your account.";
    }
    if (error && error.name === "SecurityError") {
      return "This browser refuses passkeys for this site's address.";
    }
    return error && error.message ? error.message : String(error);
  }

  // Go where the server says; to this very page (another #fragment) by loading it again,
  // which a change of fragment alone would not do.
  function go(url) {
    const target = new URL(url, window.location.href);
    const here = new URL(window.location.href);
    if (target.pathname === here.pathname && target.search === here.search) {
      window.location.hash = target.hash;
      window.location.reload();
    } else {
      window.location.assign(target.href);
    }
  }

  function say(box, message) {
    if (!box) return;
    box.textContent = message;
    box.hidden = !message;
  }

  // -- the three ceremonies
  function setUpAdding(form) {
    const box = form.querySelector("[data-passkey-error]");
    const button = form.querySelector("button[type=submit]");
    form.hidden = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      say(box, "");
      button.disabled = true;
      try {
        const options = await post(form.action, new FormData(form));
        let credential;
        try {
          credential = await navigator.credentials.create({ publicKey: creationOptions(options) });
        } catch (error) {
          throw new Error(browserError(error));
        }
        const done = await post(form.dataset.finish, registrationJSON(credential));
        go(done.redirect);
      } catch (error) {
        say(box, error.message);
        button.disabled = false;
      }
    });
  }

  function setUpSigningIn(block) {
    const box = block.querySelector("[data-passkey-error]");
    const button = block.querySelector("button");
    block.hidden = false;
    button.addEventListener("click", async () => {
      say(box, "");
      button.disabled = true;
      try {
        const options = await post(block.dataset.options, {});
        let credential;
        try {
          credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
        } catch (error) {
          throw new Error(browserError(error));
        }
        const done = await post(block.dataset.finish, assertionJSON(credential));
        go(done.redirect);
      } catch (error) {
        say(box, error.message);
        button.disabled = false;
      }
    });
  }

  if (!supported) return;
  const unsupported = document.getElementById("passkey-unsupported");
  if (unsupported) unsupported.hidden = true;
  const adding = document.getElementById("passkey-add");
  if (adding) setUpAdding(adding);
  for (const id of ["passkey-login", "passkey-second"]) {
    const block = document.getElementById(id);
    if (block) setUpSigningIn(block);
  }
})();
