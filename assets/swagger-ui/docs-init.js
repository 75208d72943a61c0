// Starts Swagger UI on the spec named by #swagger-ui's data-spec-url. Kept out of the HTML so
// the page's Content-Security-Policy needs no 'unsafe-inline' for scripts.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec-url") || "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // The online validator badge is an image from another origin: the CSP would block it.
    validatorUrl: null,
  });
});
