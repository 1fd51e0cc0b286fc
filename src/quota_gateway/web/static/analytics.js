// Draws the analytics page's charts (uPlot) and map (jsvectormap) from the JSON the server embedded.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("analytics-data").textContent);
  const palette = ["#1d4ed8", "#b91c1c", "#047857", "#7c3aed", "#b45309", "#0e7490"];

  function width(el) { return Math.max(280, el.clientWidth); }

  function chart(el, xs, series) {
    if (!el || !xs.length) return;
    const opts = {
      width: width(el), height: 240,
      series: [{}].concat(series.map((s, i) => ({
        label: s.label, stroke: palette[i % palette.length], width: 2,
        fill: series.length === 1 ? "rgba(29, 78, 216, 0.15)" : undefined,
        points: { show: xs.length < 40 },
      }))),
      axes: [{}, { size: 50 }],
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      legend: { show: series.length > 1 },
    };
    const plot = new uPlot(opts, [xs].concat(series.map((s) => s.values)), el);
    window.addEventListener("resize", () => plot.setSize({ width: width(el), height: 240 }));
    el.dataset.rendered = "true";
  }

  chart(document.getElementById("chart-activations"), data.activations.x,
        [{ label: "activations", values: data.activations.y }]);
  const units = Object.entries(data.units.series).map(([name, values]) => ({ label: name, values }));
  if (units.length) chart(document.getElementById("chart-units"), data.units.x, units);

  const mapEl = document.getElementById("map");
  if (mapEl) {
    // jsvectormap scales are ordinal: put each country in one of five shades by its share of the maximum.
    const shades = { "1": "#bfdbfe", "2": "#93c5fd", "3": "#3b82f6", "4": "#1d4ed8", "5": "#1e3a8a" };
    const most = Math.max(1, ...Object.values(data.countries));
    const levels = {};
    for (const [code, n] of Object.entries(data.countries)) levels[code] = String(Math.max(1, Math.ceil(5 * n / most)));
    new jsVectorMap({
      selector: "#map", map: "world", zoomButtons: true, zoomOnScroll: false,
      regionStyle: { initial: { fill: "#e5e7eb", stroke: "#9ca3af", strokeWidth: 0.3 } },
      series: { regions: [{ attribute: "fill", scale: shades, values: levels }] },
      onRegionTooltipShow(event, tooltip, code) {
        tooltip.text(tooltip.text() + ": " + (data.countries[code] || 0) + " activations");
      },
    });
    mapEl.dataset.rendered = "true";
  }
})();
