// One sending per form. A second click or Enter while the first sending is on its way
// would send the form again (two tickets, two comments): it is ignored. Back on the page
// (the Back button, the page restored from the browser's memory) the form sends again,
// and so it does after UNLOCK_MS: an answer that leaves the page where it is (a download,
// a form a service author sends to another window) must not lock the form for good.
(() => {
  "use strict";
  const UNLOCK_MS = 15000;
  const unlock = (form) => {
    delete form.dataset.sending;
    form.removeAttribute("aria-busy");
  };
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.method !== "post") return;
    if (form.target && form.target !== "_self") return;
    if (form.dataset.sending) {
      event.preventDefault();
    } else if (!event.defaultPrevented) {
      form.dataset.sending = "1";
      form.setAttribute("aria-busy", "true");
      window.setTimeout(() => unlock(form), UNLOCK_MS);
    }
  });
  window.addEventListener("pageshow", () => {
    for (const form of document.querySelectorAll("form[data-sending]")) unlock(form);
  });
})();
