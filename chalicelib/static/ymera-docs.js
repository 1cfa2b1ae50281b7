// Starts Swagger UI on GET /docs. A file (not an inline script) so the page's
// Content-Security-Policy can forbid inline scripts and every other origin.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // the default badge would call validator.swagger.io
    tryItOutEnabled: false
  });
});
