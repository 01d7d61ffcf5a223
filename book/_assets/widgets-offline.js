// Glue between the book's pages and the jupyter-widgets HTML manager (embed-amd.js), so that
// widgets render with no network. Loaded after require.js and before embed-amd.js
// (nb_ipywidgets_js in _config.yml).
(function () {
  // 1. The manager loads its fonts from the folder of its AMD module. By default require.js puts
  //    that module in the page's folder; map it to where the book serves embed-amd.js.
  var here = document.currentScript.src.split("?")[0];
  var folder = here.slice(0, here.lastIndexOf("/") + 1) + "offline/html-manager";
  require.config({ paths: { "@jupyter-widgets/html-manager/dist": folder } });

  // 2. Widgets typeset their labels with MathJax 2's MathJax.Hub.Queue; the book loads MathJax 3,
  //    which has no Hub. Forward those calls to MathJax 3. Widgets render on window "load", after
  //    DOMContentLoaded, when the deferred MathJax script has run.
  document.addEventListener("DOMContentLoaded", function () {
    var mathjax = window.MathJax;
    if (!mathjax || mathjax.Hub) {
      return;
    }
    mathjax.Hub = {
      Queue: function (job) {
        var element = job && job[2];
        var ready = mathjax.startup && mathjax.startup.promise
          ? mathjax.startup.promise : Promise.resolve();
        ready.then(function () {
          return mathjax.typesetPromise(element ? [element] : undefined);
        }).catch(function (error) {
          console.warn("MathJax could not typeset a widget label", error);
        });
      },
    };
  });
})();
