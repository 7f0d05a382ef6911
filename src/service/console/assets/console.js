// The console's only script: confirmation of write actions, and an opt-in auto-refresh.
"use strict";

document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("auto-refresh");
  if (!box) return;
  box.checked = window.localStorage.getItem("minion-auto-refresh") === "on";
  box.addEventListener("change", () => {
    window.localStorage.setItem("minion-auto-refresh", box.checked ? "on" : "off");
    if (box.checked) window.location.reload();
  });
  if (box.checked) {
    window.setTimeout(() => window.location.reload(), 10000);
  }
});
