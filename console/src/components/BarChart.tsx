import { placeBars, type Bar } from "@/lib/chart";

const WIDTH = 960;
const HEIGHT = 160;
const LABELS = 18;

/**
 * A plain SVG bar chart: one bar per entry, labelled under it, its exact
 * value (a decimal string, formatted by `format`) in the bar's tooltip.
 * Negative values hang below the zero line. No chart library: a few rects.
 */
export function BarChart({ bars, format, testId, title }: { bars: Bar[]; format: (value: string) => string; testId: string; title: string }) {
  const geometry = placeBars(bars, WIDTH, HEIGHT);
  const every = Math.max(1, Math.ceil(bars.length / 16));
  return (
    <figure className="chart" data-testid={testId}>
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT + LABELS}`} role="img" aria-label={title} width="100%" preserveAspectRatio="xMinYMin meet">
        <line x1={0} x2={WIDTH} y1={geometry.zero} y2={geometry.zero} className="axis" />
        {geometry.bars.map((bar, index) => (
          <g key={`${bar.label}-${index}`} data-bar={bar.label} data-value={bar.value}>
            <rect x={bar.x} y={bar.y} width={bar.width} height={Math.max(bar.height, 0.5)} className={bar.negative ? "bar negative" : "bar"}>
              <title>{`${bar.title ?? bar.label}: ${format(bar.value)}`}</title>
            </rect>
            {index % every === 0 && (
              <text x={bar.x + bar.width / 2} y={HEIGHT + LABELS - 4} textAnchor="middle" className="label">
                {bar.label}
              </text>
            )}
          </g>
        ))}
      </svg>
      <figcaption className="notice">
        {title} — largest {format(geometry.max)}
      </figcaption>
    </figure>
  );
}
