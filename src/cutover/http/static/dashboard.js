/* cutover dashboard: keeps server-rendered panels and the charts live by short polling, and
   posts actions to the admin API with the reason and the version they were taken on.
   No build step, no dependency but uPlot; the server's CSP forbids inline script and style. */
(function () {
  'use strict';

  const body = document.body;
  const csrfHeader = body.dataset.csrfHeader || 'x-cutover-request';
  const every = Math.max(1, Number(body.dataset.refresh) || 5) * 1000;
  const liveEl = document.querySelector('[data-live]');
  const flashEl = document.getElementById('flash');

  class Problem extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // -- status line and messages -------------------------------------------------------------

  function setLive(text, state) {
    if (!liveEl) return;
    liveEl.textContent = text;
    liveEl.dataset.state = state;
  }

  function flash(text, kind, link) {
    if (!flashEl) return;
    flashEl.replaceChildren();
    delete flashEl.dataset.sticky;
    const message = document.createElement('span');
    message.textContent = text;
    flashEl.append(message);
    if (link) {
      const a = document.createElement('a');
      a.href = link.href;
      a.textContent = link.text;
      flashEl.append(' ', a);
    }
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'link';
    close.dataset.flashClose = '';
    close.setAttribute('aria-label', 'Dismiss');
    close.textContent = '×';
    flashEl.append(close);
    flashEl.dataset.kind = kind;
    flashEl.hidden = false;
  }

  function clock() {
    return new Date().toLocaleTimeString();
  }

  // -- panels: server-rendered HTML, swapped in place ----------------------------------------

  function textOf(html) {
    const t = document.createElement('template');
    t.innerHTML = html;
    return t.content.textContent.trim();
  }

  function swap(html) {
    const t = document.createElement('template');
    t.innerHTML = html;
    for (const fresh of t.content.querySelectorAll('[data-panel]')) {
      const old = document.querySelector('[data-panel="' + CSS.escape(fresh.dataset.panel) + '"]');
      if (!old || old.innerHTML === fresh.innerHTML) continue;
      // Keep what the reader opened or closed, and mark the rows that are new since the last look.
      const open = new Map();
      for (const d of old.querySelectorAll('details[data-key]')) open.set(d.dataset.key, d.open);
      for (const d of fresh.querySelectorAll('details[data-key]')) {
        if (open.has(d.dataset.key)) d.open = open.get(d.dataset.key);
      }
      const seen = new Set();
      for (const row of old.querySelectorAll('[data-row]')) seen.add(row.dataset.row);
      if (seen.size) {
        for (const row of fresh.querySelectorAll('[data-row]')) {
          if (!seen.has(row.dataset.row)) row.classList.add('fresh');
        }
      }
      old.replaceWith(fresh);
    }
  }

  async function refreshPanels() {
    const response = await fetch(body.dataset.fragment, {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { accept: 'text/html' },
    });
    const html = await response.text();
    if (!response.ok) throw new Problem(response.status, textOf(html));
    swap(html);
  }

  // -- charts: the series API drawn with uPlot -----------------------------------------------

  const chartsEl = document.querySelector('[data-charts]');
  const charts = new Map();
  const LEGACY = '#2563eb';
  const NEW = '#ea580c';
  const pct = (v) => (v == null ? null : v * 100);

  const SPECS = {
    parity: {
      unit: '%',
      range: (u, min, max) => {
        if (min == null || max == null) return [99, 100];
        const low = Math.min(min, 99.9);
        return [Math.max(0, low - (100 - low) * 0.2), 100];
      },
      series: [{ label: 'parity', stroke: '#059669', fill: 'rgba(5,150,105,0.08)', get: (p) => pct(p.parity_rate) }],
    },
    drifts: {
      unit: '',
      integer: true,
      series: [{ label: 'drifts', stroke: '#dc2626', fill: 'rgba(220,38,38,0.35)', bars: true, get: (p) => p.drifts }],
    },
    calls: {
      unit: '',
      integer: true,
      series: [
        { label: 'legacy', stroke: LEGACY, get: (p) => p.legacy.calls },
        { label: 'new', stroke: NEW, get: (p) => p.new.calls },
      ],
    },
    errors: {
      unit: '%',
      range: (u, min, max) => [0, Math.max(0.1, (max || 0) * 1.25)],
      series: [
        { label: 'legacy', stroke: LEGACY, get: (p) => pct(p.legacy.error_rate) },
        { label: 'new', stroke: NEW, get: (p) => pct(p.new.error_rate) },
      ],
    },
    latency: {
      unit: 'ms',
      series: [
        { label: 'legacy p50', stroke: LEGACY, get: (p) => p.legacy.p50_ms },
        { label: 'legacy p95', stroke: LEGACY, dash: [6, 4], get: (p) => p.legacy.p95_ms },
        { label: 'legacy p99', stroke: LEGACY, dash: [2, 3], get: (p) => p.legacy.p99_ms },
        { label: 'new p50', stroke: NEW, get: (p) => p.new.p50_ms },
        { label: 'new p95', stroke: NEW, dash: [6, 4], get: (p) => p.new.p95_ms },
        { label: 'new p99', stroke: NEW, dash: [2, 3], get: (p) => p.new.p99_ms },
      ],
    },
  };

  function format(value, unit) {
    if (value == null) return '–';
    const abs = Math.abs(value);
    let text;
    if (unit === '%') text = abs >= 1 ? value.toFixed(2) : value.toPrecision(2);
    else if (abs >= 1000) text = Math.round(value).toLocaleString();
    else if (abs >= 10 || Number.isInteger(value)) text = String(Math.round(value * 10) / 10);
    else text = value.toPrecision(3);
    return unit ? text + (unit === '%' ? '%' : ' ' + unit) : text;
  }

  // Tick labels with as many decimals as the spacing between ticks needs (99.95% beside 100%).
  function ticks(spec) {
    return (u, values) => {
      const step = values.length > 1 ? Math.abs(values[1] - values[0]) : 1;
      const decimals = Math.min(4, Math.max(0, -Math.floor(Math.log10(step || 1))));
      return values.map((v) => {
        const text = v.toLocaleString(undefined, { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
        return spec.unit ? text + (spec.unit === '%' ? '%' : ' ' + spec.unit) : text;
      });
    };
  }

  const COUNTS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6];

  function heightOf(el) {
    return el.classList.contains('tall') ? 260 : 180;
  }

  function options(spec, el) {
    const grid = { stroke: '#e8edf3', width: 1 };
    return {
      width: Math.max(240, el.clientWidth),
      height: heightOf(el),
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: spec.range ? { range: spec.range } : {} },
      axes: [
        { stroke: '#64748b', grid, ticks: grid },
        Object.assign(
          { stroke: '#64748b', grid, ticks: grid, size: 72, values: ticks(spec) },
          spec.integer ? { incrs: COUNTS } : {},
        ),
      ],
      series: [
        {},
        ...spec.series.map((s) => {
          const line = {
            label: s.label,
            stroke: s.stroke,
            width: s.bars ? 0 : 1.5, // a bar of no drifts draws nothing
            points: { show: false },
            value: (u, v) => format(v, spec.unit),
          };
          if (s.fill) line.fill = s.fill;
          if (s.dash) line.dash = s.dash;
          if (s.bars) line.paths = uPlot.paths.bars({ size: [0.7, 40] });
          return line;
        }),
      ],
    };
  }

  function draw(el, points) {
    const spec = SPECS[el.dataset.chart];
    if (!spec) return;
    const data = [points.map((p) => p.start), ...spec.series.map((s) => points.map(s.get))];
    let values = 0;
    for (const ys of data.slice(1)) for (const v of ys) if (v != null) values += 1;
    el.dataset.values = String(values);
    el.classList.toggle('empty', values === 0);
    let chart = charts.get(el);
    if (!chart) {
      el.replaceChildren();
      chart = new uPlot(options(spec, el), data, el);
      charts.set(el, chart);
    } else {
      chart.setData(data);
    }
  }

  async function refreshCharts() {
    const url = chartsEl.dataset.series + '?window=' + encodeURIComponent(chartsEl.dataset.window);
    const response = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
    const payload = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Problem(response.status, payload.error || 'the series could not be read');
    }
    // The bucket under way is partial: drawn, it would read as a sudden drop in traffic.
    const complete = payload.points.filter((p) => p.start + payload.step_seconds <= payload.until);
    chartsEl.dataset.points = String(complete.length);
    for (const el of chartsEl.querySelectorAll('[data-chart]')) draw(el, complete);
  }

  if (chartsEl && window.ResizeObserver) {
    let frame = 0;
    new ResizeObserver(() => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => {
        for (const [el, chart] of charts) chart.setSize({ width: Math.max(240, el.clientWidth), height: heightOf(el) });
      });
    }).observe(chartsEl);
  }

  // -- the refresh loop: short polling, paused while the tab is hidden ------------------------

  const jobs = [];
  if (body.dataset.fragment) jobs.push(refreshPanels);
  if (chartsEl && window.uPlot) jobs.push(refreshCharts);
  let timer = 0;
  let running = null;
  let again = false;

  function report(error) {
    if (error instanceof Problem && error.status === 401) {
      setLive('signed out', 'error');
      flash(error.message, 'error', { href: '/login?next=' + encodeURIComponent(location.pathname), text: 'Sign in' });
    } else if (error instanceof Problem) {
      setLive('problem · ' + clock(), 'error');
      flash(error.message, 'error');
    } else {
      setLive('cannot reach the server · retrying', 'error');
    }
  }

  function refresh() {
    if (running) {
      again = true; // an action just landed: read once more after the read under way
      return running;
    }
    running = Promise.allSettled(jobs.map((job) => job()))
      .then((results) => {
        const failed = results.find((r) => r.status === 'rejected');
        if (failed) report(failed.reason);
        else {
          setLive('live · updated ' + clock(), 'ok');
          if (flashEl && flashEl.dataset.kind === 'error' && flashEl.dataset.sticky !== '1') flashEl.hidden = true;
        }
      })
      .finally(() => {
        running = null;
        if (again) {
          again = false;
          refresh();
        }
      });
    return running;
  }

  function schedule() {
    clearTimeout(timer);
    if (!jobs.length || document.hidden) return;
    timer = setTimeout(() => refresh().then(schedule), every);
  }

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      clearTimeout(timer);
      if (jobs.length) setLive('paused while hidden', 'idle');
    } else if (jobs.length) {
      refresh().then(schedule);
    }
  });

  if (jobs.length) {
    // The panels arrived with the page; the charts have their first data to fetch.
    const first = chartsEl && window.uPlot ? refreshCharts() : Promise.resolve();
    first
      .then(() => setLive('live · updated ' + clock(), 'ok'), report)
      .then(schedule);
  }

  // -- actions -----------------------------------------------------------------------------

  const dialog = document.getElementById('act');
  const form = dialog ? dialog.querySelector('[data-act-form]') : null;
  let pending = null;

  function showError(text) {
    const el = form.querySelector('[data-act-error]');
    el.textContent = text;
    el.hidden = false;
  }

  function open(button) {
    const verb = button.dataset.action;
    pending = { verb: verb, version: Number(button.dataset.version), button: { ...button.dataset } };
    form.reset();
    form.querySelector('[data-act-title]').textContent = button.dataset.title;
    form.querySelector('[data-act-hint]').textContent = button.dataset.hint || '';
    form.querySelector('[data-act-error]').hidden = true;
    for (const fieldset of form.querySelectorAll('fieldset[data-for]')) {
      const shown = fieldset.dataset.for.split(' ').includes(verb);
      fieldset.hidden = !shown;
      fieldset.disabled = !shown;
    }
    if (verb === 'state') {
      form.elements.mode.value = button.dataset.currentMode;
      form.elements.percent.value = button.dataset.currentPercent;
      form.elements.sample.value = button.dataset.currentSample;
    }
    if (button.dataset.step) form.elements.step.value = button.dataset.step;
    // A promotion past failing checks is a forced one: say so by ticking the box.
    if (verb === 'promote') form.elements.force.checked = button.dataset.force === '1';
    const submit = form.querySelector('[data-act-submit]');
    submit.textContent = button.dataset.title;
    submit.classList.toggle('danger', button.classList.contains('danger'));
    dialog.showModal();
    form.elements.reason.focus();
  }

  function number(field, label, low, high, integer) {
    const text = field.value.trim();
    if (text === '') return { value: null };
    const value = Number(text);
    if (!Number.isFinite(value) || value < low || value > high || (integer && !Number.isInteger(value))) {
      return { error: label + ' must be ' + (integer ? 'a whole number' : 'a number') + ' from ' + low + ' to ' + high + '.' };
    }
    return { value: value };
  }

  // The request an action makes: the endpoint and the JSON body the API documents.
  function request(reason) {
    const verb = pending.verb;
    const name = encodeURIComponent(body.dataset.migration);
    const out = { reason: reason, expected_version: pending.version };
    const f = form.elements;
    if (verb === 'state') {
      const was = pending.button;
      const percent = number(f.percent, 'Percent', 0, 100, false);
      const sample = number(f.sample, 'Sample', 0, 1, false);
      const bad = percent.error || sample.error;
      if (bad) return { error: bad };
      if (f.mode.value !== was.currentMode) out.mode = f.mode.value;
      if (percent.value !== null && percent.value !== Number(was.currentPercent)) out.percent = percent.value;
      if (sample.value !== null && sample.value !== Number(was.currentSample)) out.sample = sample.value;
      if (Object.keys(out).length === 2) return { error: 'Change the mode, percent or sample first.' };
      return { url: '/api/v1/migrations/' + name + '/state', body: out };
    }
    if (verb === 'start' || verb === 'replace') {
      if (!f.plan.value) return { error: 'Choose a plan.' };
      out.plan = f.plan.value;
      if (verb === 'replace') out.replace = true;
      return { url: '/api/v1/rollouts', body: out };
    }
    if (verb === 'approve' || verb === 'retry') {
      const step = number(f.step, 'Step', 1, 1000, true);
      if (step.error) return { error: step.error };
      if (step.value !== null) out.step = step.value;
    }
    if (verb === 'promote' && f.force.checked) out.force = true;
    return { url: '/api/v1/migrations/' + name + '/rollout/' + verb, body: out };
  }

  async function act(event) {
    event.preventDefault();
    const reason = form.elements.reason.value.trim();
    if (!reason) {
      showError('Give a reason: it is recorded in the decision log.');
      form.elements.reason.focus();
      return;
    }
    const planned = request(reason);
    if (planned.error) {
      showError(planned.error);
      return;
    }
    const submit = form.querySelector('[data-act-submit]');
    submit.disabled = true;
    let response;
    try {
      response = await fetch(planned.url, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'content-type': 'application/json', accept: 'application/json', [csrfHeader]: '1' },
        body: JSON.stringify(planned.body),
      });
    } catch (error) {
      submit.disabled = false;
      showError('The server could not be reached; check the decision log before trying again.');
      return;
    }
    submit.disabled = false;
    const payload = await response.json().catch(() => ({}));
    const said = payload.error || 'the server refused (' + response.status + ')';
    if (response.ok) {
      dialog.close();
      const decision = payload.decision;
      flash(decision ? 'Recorded: ' + decision.kind.replace(/_/g, ' ') + ': ' + decision.reason : 'Nothing changed: the state already had these settings.', 'ok');
      refresh();
    } else if (response.status === 409) {
      // Someone acted first: show what they changed rather than act on a state nobody saw.
      dialog.close();
      flash('Someone acted first: ' + said + '. The page now shows the current state; check it before acting again.', 'error');
      flashEl.dataset.sticky = '1';
      refresh();
    } else if (response.status === 401) {
      dialog.close();
      flash(said, 'error', { href: '/login?next=' + encodeURIComponent(location.pathname), text: 'Sign in' });
    } else {
      showError(said.charAt(0).toUpperCase() + said.slice(1) + (said.endsWith('.') ? '' : '.'));
    }
  }

  if (form) {
    form.addEventListener('submit', act);
    form.querySelector('[data-act-cancel]').addEventListener('click', () => dialog.close());
  }

  document.addEventListener('click', (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const button = target.closest('button[data-action]');
    if (button && !button.disabled && form) {
      open(button);
      return;
    }
    const choice = target.closest('button[data-chart-window]');
    if (choice && chartsEl) {
      chartsEl.dataset.window = choice.dataset.chartWindow;
      for (const b of chartsEl.querySelectorAll('button[data-chart-window]')) {
        b.setAttribute('aria-pressed', String(b === choice));
      }
      const url = new URL(location.href);
      url.searchParams.set('window', choice.dataset.chartWindow);
      history.replaceState(null, '', url);
      refreshCharts().catch(report);
      return;
    }
    if (target.closest('[data-flash-close]')) {
      flashEl.hidden = true;
      delete flashEl.dataset.sticky;
    }
  });
})();
