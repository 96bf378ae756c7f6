// Copy buttons: <button type="button" data-copy="TEXT" hidden> with a .copy-label inside
// and a [role=status] element after it. Without this script, or without a clipboard,
// the button stays hidden (the text it would copy is on the page or in the address bar).
(() => {
  "use strict";
  if (!navigator.clipboard || !window.isSecureContext) return;
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const label = button.querySelector(".copy-label");
    const status = button.parentElement.querySelector("[role=status]");
    const idle = label.textContent;
    let timer = 0;
    button.hidden = false;
    button.addEventListener("click", async () => {
      let said;
      try {
        await navigator.clipboard.writeText(button.dataset.copy);
        said = "Copied";
      } catch {
        said = "Could not copy";
      }
      label.textContent = said;
      if (status) status.textContent = said === "Copied" ? "Link copied to the clipboard." : said;
      clearTimeout(timer);
      timer = setTimeout(() => { label.textContent = idle; }, 2000);
    });
  }
})();
