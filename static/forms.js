// One sending per form. A second click or Enter while the first sending is on its way
// would send the form again (two tickets, two comments): it is ignored. Back on the page
// (the Back button, the page restored from the browser's memory) the form sends again.
(() => {
  "use strict";
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.method !== "post") return;
    if (form.dataset.sending) {
      event.preventDefault();
    } else if (!event.defaultPrevented) {
      form.dataset.sending = "1";
      form.setAttribute("aria-busy", "true");
    }
  });
  window.addEventListener("pageshow", () => {
    for (const form of document.querySelectorAll("form[data-sending]")) {
      delete form.dataset.sending;
      form.removeAttribute("aria-busy");
    }
  });
})();
