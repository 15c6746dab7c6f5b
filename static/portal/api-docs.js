// The REST API's docs page: Swagger UI (vendored, static/vendor/swagger-ui/) on the portal's own OpenAPI schema.
// A file of its own because the CSP allows no inline script.
(function () {
  "use strict";
  const root = document.getElementById("swagger-ui");
  if (!root || typeof window.SwaggerUIBundle !== "function") return;
  window.SwaggerUIBundle({
    url: root.dataset.schemaUrl,
    domNode: root,
    deepLinking: true,
    persistAuthorization: false,
    tryItOutEnabled: false,
    defaultModelsExpandDepth: 0,
    docExpansion: "list",
    syntaxHighlight: { activated: false },
  });
})();
