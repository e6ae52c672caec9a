// finetune: the little JavaScript the pages need. Reading pages work without it.
(function () {
  "use strict";

  // The live job page reconnects with the last event it has, so the server sends only the gap.
  htmx.createWebSocket = function (url) {
    var marker = document.getElementById("job-last-seq");
    var seq = marker ? marker.getAttribute("data-seq") : "0";
    var socket = new WebSocket(url + (url.indexOf("?") < 0 ? "?" : "&") + "last_seq=" + encodeURIComponent(seq));
    socket.binaryType = htmx.config.wsBinaryType || "blob";
    return socket;
  };
  // Reconnect soon after a drop (a server restart), backing off to at most 10 s between tries.
  htmx.config.wsReconnectDelay = function (retryCount) {
    return Math.min(10000, 500 * Math.pow(2, retryCount)) * (0.5 + Math.random() / 2);
  };
  function wsState(state) {
    var el = document.getElementById("ws-state");
    if (el) el.setAttribute("data-state", state);
  }
  // The dashboard polls its job list only while its socket is down.
  window.finetuneSocketOpen = function () {
    var el = document.getElementById("ws-state");
    return !!el && el.getAttribute("data-state") === "open";
  };
  document.body.addEventListener("htmx:beforeRequest", function (e) {
    if (e.detail.elt.hasAttribute("data-poll-offline-only") && window.finetuneSocketOpen()) e.preventDefault();
  });
  document.body.addEventListener("htmx:wsOpen", function () { wsState("open"); });
  document.body.addEventListener("htmx:wsClose", function () { wsState("offline"); });

  // Charts read the metric list the server rendered and follow the lines the socket appends.
  function num(li, name) {
    var v = li.getAttribute("data-" + name);
    return v === null || v === "" ? null : parseFloat(v);
  }
  function chart(canvas, datasets, logScale) {
    return new Chart(canvas, {
      type: "line",
      data: { datasets: datasets.map(function (d) {
        return { label: d.label, data: [], borderColor: d.color, backgroundColor: d.color, pointRadius: 0, borderWidth: 2, spanGaps: true };
      }) },
      options: { animation: false, responsive: true, parsing: false, normalized: true,
        scales: { x: { type: "linear", title: { display: true, text: "step" }, ticks: { precision: 0 } },
                  y: { type: logScale ? "logarithmic" : "linear" } } },
    });
  }
  function setupCharts() {
    var list = document.getElementById("job-metrics");
    var lossCanvas = document.getElementById("loss-chart");
    if (!list || !lossCanvas || typeof Chart === "undefined") return;
    var loss = chart(lossCanvas, [{ label: "train loss", color: "#2563eb" }, { label: "validation loss", color: "#ea580c" }]);
    var lr = chart(document.getElementById("lr-chart"), [{ label: "learning rate", color: "#15803d" }]);
    window.finetuneCharts = { loss: loss, lr: lr };
    function add(li) {
      var step = num(li, "step");
      if (step === null) return;
      [["train-loss", loss, 0], ["valid-loss", loss, 1], ["learning-rate", lr, 0]].forEach(function (s) {
        var y = num(li, s[0]);
        if (y !== null) s[1].data.datasets[s[2]].data.push({ x: step, y: y });
      });
    }
    // Every point up to the page's render comes as JSON [step, train loss, valid loss, lr];
    // lines the socket appends afterwards are read from the list.
    var points = JSON.parse((document.getElementById("chart-points") || {}).textContent || "[]");
    points.forEach(function (p) {
      if (p[0] === null) return;
      if (p[1] !== null) loss.data.datasets[0].data.push({ x: p[0], y: p[1] });
      if (p[2] !== null) loss.data.datasets[1].data.push({ x: p[0], y: p[2] });
      if (p[3] !== null) lr.data.datasets[0].data.push({ x: p[0], y: p[3] });
    });
    loss.update(); lr.update();
    new MutationObserver(function (changes) {
      changes.forEach(function (c) { c.addedNodes.forEach(function (n) { if (n.nodeType === 1) add(n); }); });
      loss.update("none"); lr.update("none");
    }).observe(list, { childList: true });
  }

  // A growing list marked data-follow (the job log) keeps its newest line in view while the reader
  // is at the bottom; once they scroll up it stays put, and its data-follow-jump button counts the
  // new lines and brings them back to the end.
  function setupFollow() {
    document.querySelectorAll("[data-follow]").forEach(function (box) {
      if (box.getAttribute("data-follow-ready")) return;
      box.setAttribute("data-follow-ready", "1");
      var jump = document.querySelector('[data-follow-jump="' + box.id + '"]');
      var atBottom = true, unseen = 0;
      function nearEnd() { return box.scrollHeight - box.scrollTop - box.clientHeight < 24; }
      function toEnd() {
        box.scrollTop = box.scrollHeight;
        atBottom = true;
        unseen = 0;
        if (jump) jump.hidden = true;
      }
      box.addEventListener("scroll", function () {
        atBottom = nearEnd();
        if (atBottom && jump) { unseen = 0; jump.hidden = true; }
      });
      new MutationObserver(function (changes) {
        var added = 0;
        changes.forEach(function (c) { c.addedNodes.forEach(function (n) { if (n.nodeType === 1) added++; }); });
        if (!added) return;
        if (atBottom) { toEnd(); return; }
        unseen += added;
        if (jump) {
          jump.textContent = "↓ " + unseen + " new line" + (unseen === 1 ? "" : "s") + ": jump to the latest";
          jump.hidden = false;
        }
      }).observe(box, { childList: true });
      if (jump) jump.addEventListener("click", function () { toEnd(); box.focus({ preventScroll: true }); });
      toEnd();
    });
  }

  // <time data-relative> says "3 minutes ago" (its title has the exact time); keep the words true
  // while the page stays open. The server's wording, recomputed from the datetime attribute.
  var UNITS = [["year", 31536000], ["month", 2592000], ["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  function agoText(when) {
    var seconds = (Date.now() - when.getTime()) / 1000, ahead = seconds < 0;
    seconds = Math.abs(seconds);
    if (seconds < 5) return "just now";
    for (var i = 0; i < UNITS.length; i++) {
      if (seconds >= UNITS[i][1]) {
        var count = Math.floor(seconds / UNITS[i][1]);
        var words = count + " " + UNITS[i][0] + (count === 1 ? "" : "s");
        return ahead ? "in " + words : words + " ago";
      }
    }
    return "just now";
  }
  function refreshTimes() {
    document.querySelectorAll("time[data-relative]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) el.textContent = agoText(when);
    });
  }
  setInterval(refreshTimes, 20000);

  // [data-elapsed] counts the seconds since it appeared ("12 s"): the playground's loading panes.
  function tickElapsed() {
    var now = Date.now();
    document.querySelectorAll("[data-elapsed]").forEach(function (el) {
      var since = parseFloat(el.getAttribute("data-elapsed-since"));
      if (!since) { since = now; el.setAttribute("data-elapsed-since", String(now)); }
      el.textContent = Math.floor((now - since) / 1000) + " s";
    });
  }
  setInterval(tickElapsed, 1000);
  document.body.addEventListener("htmx:wsAfterMessage", tickElapsed);

  // The dataset page's token histogram: prompt vs completion rows per token-count bin. The
  // section arrives with the page or later over the socket, so this runs after every swap.
  function setupHistogram() {
    var canvas = document.getElementById("token-histogram");
    var data = document.getElementById("token-histogram-data");
    if (!canvas || !data || canvas.getAttribute("data-drawn") || typeof Chart === "undefined") return;
    var bins = JSON.parse(data.textContent || "null");
    if (!bins) return;
    canvas.setAttribute("data-drawn", "1");
    window.finetuneHistogram = new Chart(canvas, {
      type: "bar",
      data: { labels: bins.labels, datasets: [
        { label: "prompt tokens", data: bins.prompt, backgroundColor: "#93c5fd" },
        { label: "completion tokens", data: bins.completion, backgroundColor: "#fdba74" }] },
      options: { animation: false, responsive: true,
        scales: { x: { title: { display: true, text: "tokens per row" } },
                  y: { title: { display: true, text: "rows" }, ticks: { precision: 0 } } } },
    });
  }
  document.body.addEventListener("htmx:wsAfterMessage", setupHistogram);
  window.addEventListener("load", setupHistogram);

  // Uploads go through the resumable chunked API: open an upload, PUT chunks at the server's
  // offset, and after a failure ask the server where it stands and go on from there (a chunk
  // whose reply was lost may have landed). The bar shows the bytes the server acknowledged.
  // Without JavaScript the form posts the whole file to the page view instead.
  var UPLOADS = "/v1/datasets/uploads";
  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }
  function UploadError(message) { this.message = message; }
  async function call(form, method, url, body, type) {
    var headers = { "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value };
    if (type) headers["Content-Type"] = type;
    var response = await fetch(url, { method: method, body: body, headers: headers, credentials: "same-origin" });
    var data = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      var error = new UploadError((data.error && data.error.message) || ("HTTP " + response.status));
      error.status = response.status;
      error.code = data.error && data.error.code;
      throw error;
    }
    return data;
  }
  function resumeKey(file) { return "finetune-upload:" + [file.name, file.size, file.lastModified].join(":"); }
  async function uploadOpen(form, file) {
    var known = window.localStorage && localStorage.getItem(resumeKey(file));
    if (known) {  // the same file, interrupted earlier (even by a closed tab): resume it
      try {
        var upload = await call(form, "GET", UPLOADS + "/" + encodeURIComponent(known));
        if (upload.status === "open" && upload.bytes === file.size) return upload;
      } catch (e) { /* gone or finished: start afresh */ }
    }
    var request = { filename: file.name, bytes: file.size };
    var text = document.getElementById("upload-text");
    if (text && text.checked) request.format = "text";  // the answer to "is this pretraining text?"
    var vision = document.getElementById("upload-vision");
    if (vision && vision.checked) request.purpose = "vision";  // an archive of labelled images
    var created = await call(form, "POST", UPLOADS, JSON.stringify(request), "application/json");
    if (window.localStorage) localStorage.setItem(resumeKey(file), created.id);
    return created;
  }
  async function uploadChunked(form, file) {
    var bar = document.getElementById("upload-progress");
    var chunk = parseInt(form.getAttribute("data-chunk-bytes"), 10) || 4 * 1024 * 1024;
    function show(offset) { bar.hidden = false; bar.value = file.size ? (offset / file.size) * 100 : 0; }
    var upload = await uploadOpen(form, file);
    var url = UPLOADS + "/" + encodeURIComponent(upload.id);
    var offset = upload.offset, failures = 0;
    show(offset);
    while (offset < file.size) {
      try {
        upload = await call(form, "PUT", url + "/chunk?offset=" + offset, file.slice(offset, offset + chunk),
                            "application/octet-stream");
        offset = upload.offset;
        failures = 0;
      } catch (error) {
        if (error instanceof UploadError && error.status && error.status < 500 && error.status !== 409) throw error;
        if (++failures > 8) throw new UploadError("The upload keeps failing; try again later (it resumes where it stopped).");
        await sleep(Math.min(8000, 250 * Math.pow(2, failures)));
        offset = (await call(form, "GET", url).catch(function () { return { offset: offset }; })).offset;
      }
      form.setAttribute("data-acknowledged", offset);
      show(offset);
    }
    upload = await call(form, "POST", url + "/complete", JSON.stringify({}), "application/json");
    if (window.localStorage) localStorage.removeItem(resumeKey(file));
    return upload;
  }
  // "Is this pretraining text?" matters for plain-text files only: ask it when one is picked (or
  // when the server says it needs the answer); without JavaScript the question is always there.
  var PLAIN_TEXT = /\.txt(\.gz)?$/i;
  function textIntent(show) {
    var intent = document.getElementById("text-intent"), box = document.getElementById("upload-text");
    if (intent) intent.hidden = !(show || (box && box.checked));
  }
  function setupUpload() {
    var form = document.getElementById("upload-form");
    if (!form || form.getAttribute("data-ready") || !window.fetch) return;
    form.setAttribute("data-ready", "1");
    var picker = document.getElementById("upload-file");
    textIntent(picker.files.length && PLAIN_TEXT.test(picker.files[0].name));
    picker.addEventListener("change", function () {
      textIntent(picker.files.length && PLAIN_TEXT.test(picker.files[0].name));
    });
    form.addEventListener("submit", function (e) {
      var input = document.getElementById("upload-file");
      if (!input.files.length) return;  // the browser's own "required" message
      e.preventDefault();
      var error = document.getElementById("upload-error"), button = form.querySelector("button[type=submit]");
      error.textContent = "";
      button.disabled = true;
      uploadChunked(form, input.files[0]).then(function (upload) {
        window.location.assign("/datasets/" + encodeURIComponent(upload.dataset.id) + "/");
      }, function (problem) {
        error.textContent = problem.message || String(problem);
        if (problem.code === "text_format_unconfirmed") textIntent(true);
        button.disabled = false;
      });
    });
  }
  function setupDropzone() {
    var zone = document.getElementById("dropzone");
    if (!zone) return;
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      var input = document.getElementById("upload-file");
      if (e.dataTransfer.files.length && input) {
        input.files = e.dataTransfer.files;
        var box = document.getElementById("upload-text");
        if (PLAIN_TEXT.test(input.files[0].name) && box && !box.checked) {
          textIntent(true);  // ask first; Upload sends it once answered
          box.focus();
          return;
        }
        input.form.requestSubmit();
      }
    });
  }

  // Evaluation and registry pages: bar charts of metrics per model, loss per version.
  function setupMetricCharts() {
    if (typeof Chart === "undefined") return;
    var colors = ["#94a3b8", "#2563eb", "#f97316", "#16a34a"];
    var metrics = document.getElementById("metrics-chart");
    var metricsData = document.getElementById("metrics-chart-data");
    if (metrics && metricsData && !metrics.getAttribute("data-drawn")) {
      metrics.setAttribute("data-drawn", "1");
      var data = JSON.parse(metricsData.textContent);
      new Chart(metrics, { type: "bar", data: { labels: data.labels, datasets: data.datasets.map(function (d, i) {
        return { label: d.label, data: d.data, backgroundColor: colors[i % colors.length] };
      }) }, options: { animation: false, scales: { y: { min: 0, max: 1 } } } });
    }
    var versions = document.getElementById("versions-chart");
    var versionsData = document.getElementById("versions-chart-data");
    if (versions && versionsData && !versions.getAttribute("data-drawn")) {
      versions.setAttribute("data-drawn", "1");
      var v = JSON.parse(versionsData.textContent);
      new Chart(versions, { type: "line", data: { labels: v.labels, datasets: [
        { label: "tuned eval loss", data: v.tuned, borderColor: colors[1], spanGaps: true },
        { label: "base eval loss", data: v.base, borderColor: colors[0], borderDash: [4, 4], spanGaps: true }] },
        options: { animation: false } });
    }
  }
  document.body.addEventListener("htmx:afterSwap", setupMetricCharts);
  window.addEventListener("load", setupMetricCharts);

  // A form with data-confirm asks first (inline onsubmit handlers are forbidden by the CSP).
  document.addEventListener("submit", function (e) {
    var message = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) e.preventDefault();
  });

  setupCharts();
  setupFollow();
  setupUpload();
  setupDropzone();
})();
