// cellpipe UI, compare page: one Chart.js bar chart per metric across the compared runs.
// The data comes from <script type="application/json" id="cp-chart-data"> (no inline script:
// the page's Content-Security-Policy forbids it); each <canvas data-metric=NAME> gets its chart.
(function () {
  "use strict";

  function shortRun(id) {
    // wine-20261203-172158-9279b5 -> 172158-9279b5 (the axis stays readable; titles say all)
    var parts = String(id).split("-");
    return parts.length > 2 ? parts.slice(-2).join("-") : String(id);
  }

  function draw() {
    var source = document.getElementById("cp-chart-data");
    if (!source || typeof window.Chart === "undefined") {
      return;
    }
    var data = JSON.parse(source.textContent);
    var labels = data.runs.map(shortRun);
    var palette = ["#0969da", "#1a7f37", "#bf3989", "#9a6700", "#8250df", "#cf222e"];
    document.querySelectorAll("canvas[data-metric]").forEach(function (canvas) {
      var name = canvas.getAttribute("data-metric");
      var metric = data.metrics.find(function (m) { return m.name === name; });
      if (!metric) {
        return;
      }
      var chart = new window.Chart(canvas, {
        type: "bar",
        data: {
          labels: labels,
          datasets: [{
            label: name,
            data: metric.values,
            backgroundColor: data.runs.map(function (_, i) { return palette[i % palette.length]; }),
          }],
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          plugins: {
            legend: { display: false },
            title: { display: true, text: name + (metric.differs ? " (differs)" : "") },
            tooltip: {
              callbacks: {
                title: function (items) { return data.runs[items[0].dataIndex]; },
              },
            },
          },
          scales: { y: { beginAtZero: true } },
        },
      });
      canvas.setAttribute("data-chart-ready", "true");
      canvas.cpChart = chart;
    });
    document.documentElement.setAttribute("data-charts-ready", "true");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
