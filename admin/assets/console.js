// The console's live charts. Each element with data-series names a JSON endpoint that answers
// {"t": [unix seconds], "ready": [values]}; the chart polls it every 2 s while the page is open.
// No inline script anywhere: the Content-Security-Policy allows this file only.
"use strict";

function startChart(element) {
  const url = element.dataset.series;
  const label = element.dataset.label || "ready";
  const options = {
    width: Math.max(element.clientWidth, 320),
    height: 180,
    scales: { x: { time: true } },
    series: [{}, { label: label, stroke: "#2563eb", width: 2 }],
    axes: [{}, { label: "messages" }],
  };
  const chart = new uPlot(options, [[], []], element);
  async function poll() {
    try {
      const answer = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
      if (answer.ok) {
        const data = await answer.json();
        chart.setData([data.t, data.ready]);
        element.dataset.points = String(data.t.length);
      }
    } catch (e) {
      // A failed poll leaves the chart as it was; the next one tries again.
    }
  }
  poll();
  setInterval(poll, 2000);
}

document.addEventListener("DOMContentLoaded", function () {
  if (typeof uPlot === "undefined") {
    return;
  }
  document.querySelectorAll("[data-series]").forEach(startChart);
});
