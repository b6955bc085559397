// The console works without script; this only adds "select all" for bulk actions on lists.
(function () {
  'use strict';
  document.addEventListener('change', function (ev) {
    var all = ev.target.closest('[data-check-all]');
    if (!all) { return; }
    all.closest('form').querySelectorAll('input[type="checkbox"][name="id"]').forEach(function (c) {
      c.checked = all.checked;
    });
  });
})();
