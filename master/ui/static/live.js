// Live fragments of the console, without polling: an element with data-live names one of the console's
// event streams (/ui/events, /ui/tasks/<id>/logs/events). On each "change" event htmx re-fetches the
// element (its own hx-get, triggered by the custom event "live"), at most once per 300 ms, so a burst of
// changes costs one request, and a change during a fetch gets a fetch after it; "end" closes the stream (the
// job or task is over). The element is looked up by id each time because a fragment may replace it
// (hx-swap="outerHTML").
'use strict';
(function () {
  function connect(el) {
    var id = el.id;
    var source = new EventSource(el.dataset.live);
    var timer = null;
    function fire() {
      timer = null;
      var target = document.getElementById(id);
      if (!target) return;
      // A fetch still in flight may predate this change, and htmx drops a request queued on an element
      // that the swap replaces: ask again once it is done.
      if (target.classList.contains('htmx-request')) {
        timer = setTimeout(fire, 300);
        return;
      }
      window.htmx.trigger(target, 'live');
    }
    source.addEventListener('change', function () {
      if (timer === null) timer = setTimeout(fire, 300);
    });
    source.addEventListener('end', function () { source.close(); });
  }
  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('[data-live]').forEach(connect);
  });
})();
