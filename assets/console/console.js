// The console works without script; this adds conveniences: "select all" for bulk actions on
// lists, and a reassignment's progress followed live (no reload until it finishes).
(function () {
  'use strict';
  document.addEventListener('change', function (ev) {
    var all = ev.target.closest('[data-check-all]');
    if (!all) { return; }
    all.closest('form').querySelectorAll('input[type="checkbox"][name="id"]').forEach(function (c) {
      c.checked = all.checked;
    });
  });

  function setBar(bar, percent) {
    bar.style.width = Math.max(0, Math.min(100, percent)) + '%';
  }
  document.querySelectorAll('[data-bar]').forEach(function (bar) {
    setBar(bar, Number(bar.getAttribute('data-percent')) || 0);
  });

  var panel = document.querySelector('[data-progress]');
  if (!panel || panel.getAttribute('data-running') !== 'true') { return; }
  var url = panel.getAttribute('data-progress');
  function show(p) {
    ['finished', 'done', 'refused', 'failed', 'waiting'].forEach(function (k) {
      var el = panel.querySelector('[data-' + k + ']');
      if (el) { el.textContent = p[k]; }
    });
    setBar(panel.querySelector('[data-bar]'), p.total ? (100 * p.finished) / p.total : 0);
  }
  function poll() {
    fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
      .then(function (p) {
        show(p);
        if (p.state !== 'running') { location.replace(location.pathname); return; }
        setTimeout(poll, 2000);
      }, function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 1000);
})();

// 规则: a retroactive scan's progress, followed while it runs.
(function () {
  'use strict';
  var job = document.querySelector('[data-rescan]');
  if (!job || job.getAttribute('data-running') !== 'true') { return; }
  var url = job.getAttribute('data-rescan');
  function set(name, value) {
    var el = job.querySelector('[data-rescan-' + name + ']');
    if (el) { el.textContent = value; }
  }
  function poll() {
    fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
      .then(function (p) {
        set('state', p.label);
        set('done', p.done);
        set('total', p.total);
        set('outcome', p.outcome);
        var state = job.querySelector('[data-rescan-state]');
        if (state) { state.className = 'state st-' + p.state; }
        if (p.state === 'queued' || p.state === 'running') { setTimeout(poll, 2000); }
      }, function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 1000);
})();
