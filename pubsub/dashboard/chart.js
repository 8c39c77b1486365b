// The live chart: publishes/s and deliveries/s over the last five minutes, one
// point per poll. uPlot (vendor/, MIT) is loaded as a global by index.html.

const WINDOW_SECONDS = 300;
const HEIGHT = 220;

export class RateChart {
  constructor(element) {
    this.element = element;
    this.times = [];
    this.publishes = [];
    this.deliveries = [];
    const options = {
      width: this.width(),
      height: HEIGHT,
      // The x axis always spans five minutes up to the newest point, so the
      // chart scrolls instead of stretching while it fills.
      scales: {
        x: { time: true, range: (_plot, _min, max) => [max - WINDOW_SECONDS, max] },
        // Rates start at zero: a chart that zooms into 990-1010/s would look like a storm.
        y: { range: (_plot, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      series: [
        {},
        { label: "publishes/s", stroke: "#2563eb", width: 2, value: formatRateValue },
        { label: "deliveries/s", stroke: "#ea580c", width: 2, value: formatRateValue },
      ],
      axes: [{}, { size: 60 }],
    };
    this.plot = new uPlot(options, [this.times, this.publishes, this.deliveries], element);
    window.addEventListener("resize", () => this.plot.setSize({ width: this.width(), height: HEIGHT }));
  }

  width() {
    return Math.max(this.element.clientWidth, 300);
  }

  /** One sample at `seconds` (Unix time). */
  add(seconds, publishes, deliveries) {
    this.times.push(seconds);
    this.publishes.push(publishes);
    this.deliveries.push(deliveries);
    while (this.times[0] < seconds - WINDOW_SECONDS) {
      this.times.shift();
      this.publishes.shift();
      this.deliveries.shift();
    }
    this.plot.setData([this.times, this.publishes, this.deliveries]);
  }

  clear() {
    this.times.length = this.publishes.length = this.deliveries.length = 0;
    this.plot.setData([this.times, this.publishes, this.deliveries]);
  }
}

function formatRateValue(_plot, value) {
  return value == null ? "–" : value.toFixed(1);
}
