// Progressive enhancement only: every page works without it.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) event.preventDefault();
});
document.querySelectorAll("[data-select-on-focus]").forEach((el) => {
  el.addEventListener("focus", () => el.select());
});
