"""The report's page: one jinja2 template, rendered with autoescaping.

    from fksteer.report.template import PAGE

The page has no script and fetches nothing: styles are inline, images are ``data:`` URIs and
plots are inline SVG. Its structure is stable for tests: sections with ids ``samples``,
``ess``, ``rewards``, ``lineage`` and ``config`` (plus ``evidence``, ``lambda``, ``dead``,
``timing``, ``summary`` and, for summaries, ``results`` and ``plots``), and each sample an
element of class ``sample`` with ``data-prompt``, ``data-particle``, ``data-weight``,
``data-reward`` and ``data-ancestor`` attributes (``data-best`` on the best one).
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em;
       color: #222; line-height: 1.4; }
nav a { margin-right: 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
h3 { font-size: 1.05em; margin: 1em 0 0.4em; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; }
.samples { display: flex; flex-wrap: wrap; gap: 6px; }
.sample { margin: 0; padding: 4px; border: 2px solid #ddd; border-radius: 4px;
          font-size: 0.75em; background: #fafafa; }
.sample.best { border-color: #d62828; background: #fff0f0; }
.sample.image { width: {{ image_width + 28 }}px; }
.sample img { display: block; image-rendering: pixelated; width: {{ image_width }}px;
              height: auto; }
.sample.text { width: 100%; display: flex; gap: 1em; align-items: baseline; }
.sample.text .words { flex: 1; font-family: ui-monospace, monospace; font-size: 1.2em; }
.prompt-text { color: #1d4ed8; font-weight: 600; border-right: 2px solid #93c5fd;
               padding-right: 0.25em; margin-right: 0.25em; }
.badge { color: #d62828; font-weight: 700; }
.side { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5em; }
figure.plot { margin: 0.5em 0; }
figure.plot svg { max-width: 100%; height: auto; }
.plots img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
pre.command { white-space: pre-wrap; word-break: break-word; }
details { margin: 0.5em 0; }
</style>
</head>
<body>
<header>
<h1>{{ title }}</h1>
<p class="sub">{{ subtitle }}</p>
<nav>{% for id, name in nav %}<a href="#{{ id }}">{{ name }}</a>{% endfor %}</nav>
{% if not plots_available %}<p class="note">Plots need matplotlib, which is not installed:
<code>pip install "fksteer[report]"</code>, then <code>fksteer report {{ folder }}</code>.
The traces are in the tables below.</p>{% endif %}
</header>
<main>
{% macro card(c) -%}
<figure class="sample{% if c.best %} best{% endif %}{% if c.text is not none %} text{% endif %}
{%- if c.image %} image{% endif %}"
 data-prompt="{{ c.prompt }}" data-group="{{ c.group }}" data-particle="{{ c.particle }}"
 data-weight="{{ '%.6g' % c.weight }}" data-reward="{{ fmt(c.reward) }}"
 data-ancestor="{{ c.root }}"{% if c.best %} data-best="true"{% endif %}>
{% if c.image %}<img src="{{ c.image }}" alt="particle {{ c.particle }}">{% endif %}
{% if c.text is not none %}<span class="words"><span class="prompt-text">{{ c.prompt }}</span>
{{- c.text }}</span>{% endif %}
<figcaption>{% if c.best %}<span class="badge">best</span> {% endif %}#{{ c.particle }}
from #{{ c.root }}{% if c.text is none %}<br>{% else %}, {% endif %}w={{ '%.3f' % c.weight }}
{%- if c.text is none %}<br>{% else %}, {% endif %}r={{ fmt(c.reward) }}</figcaption>
</figure>
{%- endmacro %}
{% macro plot(svg) -%}
{% if svg %}<figure class="plot">{{ svg | safe }}</figure>{% endif %}
{%- endmacro %}
{% if summary %}
<section id="{{ summary.id }}">
<h2>{{ summary.heading }}</h2>
{{ summary.html | safe }}
{% if summary.images %}<div class="plots" id="plots">
{% for name, uri in summary.images %}<figure><img src="{{ uri }}" alt="{{ name }}">
<figcaption>{{ name }}</figcaption></figure>
{% endfor %}</div>{% endif %}
</section>
{% endif %}
{% for run in runs %}{% if loop.first %}
<section id="evidence">
<h2>Log-evidence and final state per prompt</h2>
<table>
<tr><th>prompt</th>{% for r in runs %}<th>log Z{{ r.tag }}</th><th>final ESS{{ r.tag }}</th>
<th>best reward{{ r.tag }}</th><th>weighted reward{{ r.tag }}</th>
<th>ancestors left{{ r.tag }}</th>{% endfor %}</tr>
{% for prompt in run.prompts %}{% set g = loop.index0 %}<tr><td>{{ prompt }}</td>
{% for r in runs %}{% for value in r.evidence[g] %}<td class="num">{{ value }}</td>
{% endfor %}{% endfor %}</tr>
{% endfor %}</table>
<p>log Z: the log of the estimate of Z = E<sub>p</sub>[exp(&lambda; r(x<sub>0</sub>))]
(its exponential is unbiased);
ancestors left: initial particles with a descendant among the final ones.</p>
</section>
<section id="samples">
<h2>Final samples by weight</h2>
<p>Each prompt's {{ run.num_particles }} particles, heaviest first; the highest reward framed in
red;
&ldquo;from #i&rdquo;: the initial particle it descends from.{% if thumbnails %} Images are
thumbnails (more than {{ thumbnail_above }} particles per prompt).{% endif %}</p>
{% for g in range(run.num_groups) %}
<div class="prompt-group" data-prompt="{{ run.prompts[g] }}">
<h3>{{ run.prompts[g] or "(no prompt)" }}</h3>
{% if runs | length > 1 %}<div class="side">{% for r in runs %}<div><h4>{{ r.label }}</h4>
<div class="samples" data-run="{{ r.label }}">{% for c in r.cards[g] %}{{ card(c) }}{% endfor %}
</div></div>{% endfor %}</div>
{% else %}<div class="samples">{% for c in run.cards[g] %}{{ card(c) }}{% endfor %}</div>{% endif %}
</div>
{% endfor %}
</section>
{% endif %}{% endfor %}
{% if runs %}
<section id="ess">
<h2>Effective sample size</h2>
{{ plot(figures.ess) }}
<p>{{ ess_note }}</p>
{% for r in runs %}{% for c in r.collapses %}
<p class="note collapse" data-prompt="{{ c.prompt }}" data-lineages="{{ c.lineages }}"
 data-steps="{{ c.steps | join(',') }}">Weights
collapsed{{ r.tag }} for &ldquo;{{ c.prompt }}&rdquo;: ESS &lt; {{ collapsed_ess }} (one particle
holds nearly all the weight) at {{ c.steps | length }} step(s) ({{ c.steps[:12] | join(", ") }}
{%- if c.steps | length > 12 %}, &hellip;{% endif %}); {{ c.lineages }} lineage(s) left at the
end.</p>{% endfor %}{% endfor %}
</section>
<section id="rewards">
<h2>Rewards</h2>
{{ plot(figures.rewards) }}
</section>
<section id="lambda">
<h2>Tilt &lambda;</h2>
{{ plot(figures.tilts) }}
<p>{{ lambda_note }}</p>
</section>
<section id="dead">
<h2>Dead particles</h2>
{{ plot(figures.dead) }}
<p>Rewards NaN or -inf (dead particles), summed over the scoring steps: {{ dead_total }}.</p>
</section>
<section id="timing">
<h2>Time per step</h2>
{{ plot(figures.timing) }}
<table><tr><th>run</th><th>model s</th><th>decode s</th><th>reward s</th><th>engine s</th></tr>
{% for r in runs %}<tr><td>{{ r.label }}</td>
{% for value in r.seconds %}<td class="num">{{ value }}</td>{% endfor %}</tr>{% endfor %}</table>
</section>
<section id="lineage">
<h2>Genealogy</h2>
{{ plot(figures.distinct) }}
{% for r in runs %}{% for svg in r.lineages %}{{ plot(svg) }}{% endfor %}
{% if r.lineage_note %}<p>{{ r.lineage_note }}</p>{% endif %}{% endfor %}
</section>
<section id="trace">
<h2>Trace</h2>
{% for r in runs %}<details{% if not plots_available %} open{% endif %}>
<summary>per-step numbers{{ r.tag }} (over prompts: min/mean ESS, mean of the mean and max
rewards)</summary>
<table><tr><th>step</th><th>scored</th><th>resampled</th><th>min ESS</th><th>mean ESS</th>
<th>mean reward</th><th>max reward</th><th>&lambda;</th><th>dead</th><th>ancestors left</th>
<th>seconds</th></tr>
{% for row in r.trace_rows %}<tr>{% for value in row %}<td class="num">{{ value }}</td>
{% endfor %}</tr>
{% endfor %}</table></details>{% endfor %}
</section>
{% endif %}
<section id="config">
<h2>Configuration, machine and command</h2>
{% for block in configs %}<h3>{{ block.label }}</h3>
{% if block.command %}<p>Reproduce with:</p>
<pre class="command">{{ block.command }}</pre>{% endif %}
<pre>{{ block.json }}</pre>{% endfor %}
</section>
</main>
<footer><p>Written by fksteer {{ version }}: Feynman-Kac steering of diffusion models
(<a href="https://arxiv.org/abs/2501.06848">Singhal et al. 2025</a>).</p></footer>
</body>
</html>
"""
