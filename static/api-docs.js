// The API docs page: Swagger UI over this service's /api/openapi.json.
// Loaded as a file (the pages' content security policy allows no inline script); the
// document's address comes from the page's data-openapi-url attribute.
(function () {
  "use strict";
  function start() {
    var root = document.getElementById("api-docs");
    if (!root || typeof window.SwaggerUIBundle !== "function") {
      return;
    }
    window.SwaggerUIBundle({
      url: root.getAttribute("data-openapi-url"),
      domNode: root,
      deepLinking: true,
      layout: "BaseLayout",
      // Trying calls from the page needs a token pasted in "Authorize"; nothing else is sent.
      tryItOutEnabled: false,
      withCredentials: false,
      validatorUrl: null,
      syntaxHighlight: { activated: true, theme: "agate" },
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
