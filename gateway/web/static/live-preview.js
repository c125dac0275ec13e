/* Warta dashboard: the compose form's live preview.
 *
 * While the author types, the form is sent (debounced) to the preview endpoint named in the
 * form's data-live-preview attribute, which saves nothing and answers with the preview block
 * rendered on the server; it replaces the contents of #live-preview. Without JavaScript the
 * form's Preview button does the same with a full page. The CSRF token travels in the form.
 */
(function () {
  "use strict";
  var form = document.querySelector("form[data-live-preview]");
  var target = document.getElementById("live-preview");
  if (!form || !target || !window.fetch || !window.FormData || !window.URLSearchParams) {
    return;
  }
  var url = form.getAttribute("data-live-preview");
  var waitMs = 400;
  var timer = null;
  var inFlight = null;
  var latest = 0;

  function refresh() {
    if (inFlight && window.AbortController) {
      inFlight.abort();
    }
    inFlight = window.AbortController ? new AbortController() : null;
    var mine = ++latest;
    target.setAttribute("aria-busy", "true");
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-Warta-Fragment": "1" },
      body: new URLSearchParams(new FormData(form)),
      signal: inFlight ? inFlight.signal : undefined
    })
      .then(function (response) {
        var isBlock = response.headers.get("X-Warta-Fragment") === "1";
        return response.text().then(function (html) { return isBlock ? html : null; });
      })
      .then(function (html) {
        if (mine !== latest) { return; }
        target.removeAttribute("aria-busy");
        if (html !== null) {
          target.innerHTML = html;
        } else {
          /* Not a preview (the session ended?): the form still saves as usual. */
          target.textContent = target.getAttribute("data-unavailable") || "";
        }
      })
      .catch(function (error) {
        if (error && error.name === "AbortError") { return; }
        target.removeAttribute("aria-busy");
      });
  }

  function soon() {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, waitMs);
  }

  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
  if (form.hasAttribute("data-preview-now")) {
    refresh();
  }
}());
