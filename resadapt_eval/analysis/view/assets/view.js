/* resadapt-eval view: the pages' behaviour. Plain DOM, no libraries, works from file://.
 * Each page carries its rows as JSON in <script id="data">; tables are sorted, filtered and paged here,
 * so a run of 10,000 records draws 50 rows at a time. */
(function () {
  "use strict";

  function pageData() {
    var el = document.getElementById("data");
    return el && el.textContent.trim() ? JSON.parse(el.textContent) : {};
  }

  function h(tag, attrs) {
    var el = document.createElement(tag);
    var key;
    for (key in attrs || {}) {
      if (key === "text") el.textContent = attrs[key];
      else if (key === "cls") el.className = attrs[key];
      else el.setAttribute(key, attrs[key]);
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return el;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "";
    return typeof v === "number" ? (digits === undefined ? String(v) : v.toFixed(digits)) : String(v);
  }

  function compare(a, b) {
    var na = a === null || a === undefined || a === "", nb = b === null || b === undefined || b === "";
    if (na || nb) return na === nb ? 0 : (na ? 1 : -1);
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, {numeric: true});
  }

  /* Server-written tables (overview): click a header to sort by it (numbers by their data-v). */
  function makeSortable(table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () {
        var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        Array.prototype.forEach.call(heads, function (o) { o.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        function key(row) {
          var cell = row.cells[col];
          var v = cell.getAttribute("data-v");
          if (v !== null && v !== "None" && v !== "") return parseFloat(v);
          return cell.textContent === "" ? null : cell.textContent;
        }
        rows.sort(function (a, b) {
          var ka = key(a), kb = key(b);
          if (ka === null || kb === null) return compare(ka, kb);
          return dir * compare(ka, kb);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  /* A sortable, filterable, paged table over an array of rows, drawn page by page. */
  function PagedTable(container, columns, rows, size) {
    this.columns = columns;
    this.all = rows;
    this.size = size || 50;
    this.page = 0;
    this.sortCol = -1;
    this.dir = 1;
    this.filter = null;
    var self = this;
    this.table = h("table", {cls: "paged"});
    var tr = h("tr");
    this.heads = columns.map(function (c, i) {
      var th = h("th", {text: c.label});
      th.addEventListener("click", function () { self.sortBy(i); });
      tr.appendChild(th);
      return th;
    });
    this.table.appendChild(h("thead", null, tr));
    this.body = h("tbody");
    this.table.appendChild(this.body);
    this.info = h("span", {cls: "info"});
    this.prev = h("button", {type: "button", cls: "prev", text: "◀ prev"});
    this.next = h("button", {type: "button", cls: "next", text: "next ▶"});
    this.prev.addEventListener("click", function () { self.go(self.page - 1); });
    this.next.addEventListener("click", function () { self.go(self.page + 1); });
    container.appendChild(h("div", {cls: "pager"}, this.prev, this.next, this.info));
    container.appendChild(this.table);
    this.refresh();
  }
  PagedTable.prototype.sortBy = function (i) {
    this.dir = this.sortCol === i ? -this.dir : 1;
    this.sortCol = i;
    var self = this;
    this.heads.forEach(function (th, j) {
      if (j === i) th.setAttribute("aria-sort", self.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    this.page = 0;
    this.refresh();
  };
  PagedTable.prototype.setFilter = function (fn) { this.filter = fn; this.page = 0; this.refresh(); };
  PagedTable.prototype.go = function (p) { this.page = p; this.draw(); };
  PagedTable.prototype.refresh = function () {
    var view = this.filter ? this.all.filter(this.filter) : this.all.slice();
    if (this.sortCol >= 0) {
      var value = this.columns[this.sortCol].value, dir = this.dir;
      view.sort(function (a, b) {
        var va = value(a), vb = value(b);
        var missing = va === null || va === undefined || vb === null || vb === undefined;
        return missing ? compare(va, vb) : dir * compare(va, vb);
      });
    }
    this.view = view;
    this.draw();
  };
  PagedTable.prototype.draw = function () {
    var pages = Math.max(1, Math.ceil(this.view.length / this.size));
    this.page = Math.max(0, Math.min(this.page, pages - 1));
    var start = this.page * this.size, columns = this.columns, body = this.body;
    body.textContent = "";
    this.view.slice(start, start + this.size).forEach(function (row) {
      var tr = h("tr");
      columns.forEach(function (c) {
        var shown = c.render ? c.render(row) : fmt(c.value(row), c.digits);
        tr.appendChild(h("td", {cls: c.num ? "num" : ""}, shown));
      });
      body.appendChild(tr);
    });
    this.info.textContent = "page " + (this.page + 1) + " of " + pages + " · " + this.view.length + " of " +
      this.all.length + " rows";
    this.prev.disabled = this.page === 0;
    this.next.disabled = this.page >= pages - 1;
  };

  /* -- a run: its records ------------------------------------------------------------------- */
  function runPage(d) {
    var right = d.right;
    function verdict(r) { return r[5] ? "error" : (r[1] !== null && r[1] >= right ? "right" : "wrong"); }
    var cols = [
      {label: "id", value: function (r) { return r[0]; },
       render: function (r) { return h("a", {href: r[6], text: r[0]}); }},
      {label: "score (" + d.metric + ")", num: true, value: function (r) { return r[1]; },
       render: function (r) { return h("span", {cls: {right: "ok", wrong: "bad", error: "err"}[verdict(r)]}, fmt(r[1], 3)); }},
      {label: "tokens", num: true, value: function (r) { return r[2]; }},
      {label: "retention", num: true, digits: 3, value: function (r) { return r[3]; }},
      {label: "time s", num: true, digits: 3, value: function (r) { return r[4]; }},
      {label: "error", value: function (r) { return r[5]; }}
    ];
    var table = new PagedTable(document.getElementById("records"), cols, d.rows, 50);
    var text = document.getElementById("filter"), show = document.getElementById("show");
    function apply() {
      var q = text.value.trim().toLowerCase(), want = show.value;
      table.setFilter(function (r) {
        if (want !== "all" && verdict(r) !== want) return false;
        return !q || r[0].toLowerCase().indexOf(q) >= 0 || (r[5] || "").toLowerCase().indexOf(q) >= 0;
      });
    }
    text.addEventListener("input", apply);
    show.addEventListener("change", apply);
  }

  /* -- the samples of a task: where A is right and B wrong ---------------------------------- */
  var MARK = {"1": ["✓", "ok"], "0": ["✗", "bad"], "!": ["!", "err"], "-": ["·", ""]};

  function markNode(m) { return h("span", {cls: MARK[m][1]}, MARK[m][0]); }

  function samplesPage(d) {
    var a = document.getElementById("run-a"), b = document.getElementById("run-b");
    [a, b].forEach(function (sel) {
      sel.appendChild(h("option", {value: "", text: "(any run)"}));
      d.runs.forEach(function (r, i) { sel.appendChild(h("option", {value: String(i), text: r.label})); });
    });
    var cols = [
      {label: "id", value: function (s) { return s.id; }, render: function (s) { return h("a", {href: s.href, text: s.id}); }},
      {label: "target", value: function (s) { return s.target; }},
      {label: "right in", num: true, value: function (s) { return s.marks.split("1").length - 1; },
       render: function (s) { return (s.marks.split("1").length - 1) + " / " + s.marks.length; }},
      {label: "runs (" + d.runs.map(function (r) { return r.label; }).join(", ") + ")",
       value: function (s) { return s.marks; },
       render: function (s) {
         var span = h("span", {cls: "marks"});
         s.marks.split("").forEach(function (m, i) {
           var node = markNode(m);
           node.title = d.runs[i].label;
           span.appendChild(node);
         });
         return span;
       }}
    ];
    var table = new PagedTable(document.getElementById("samples"), cols, d.samples, 50);
    var text = document.getElementById("filter"), count = document.getElementById("ab-count");
    function apply() {
      var ia = a.value === "" ? -1 : +a.value, ib = b.value === "" ? -1 : +b.value, q = text.value.trim().toLowerCase();
      table.setFilter(function (s) {
        if (ia >= 0 && s.marks[ia] !== "1") return false;
        if (ib >= 0 && s.marks[ib] !== "0") return false;
        return !q || s.id.toLowerCase().indexOf(q) >= 0;
      });
      count.textContent = ia < 0 && ib < 0 ? "" : table.view.length + " samples" +
        (ia >= 0 ? " right in " + d.runs[ia].label : "") + (ib >= 0 ? (ia >= 0 ? " and" : "") + " wrong in " + d.runs[ib].label : "");
    }
    [a, b].forEach(function (s) { s.addEventListener("change", apply); });
    text.addEventListener("input", apply);
  }

  /* -- one sample across runs: answer, plan thumbnails, token heatmap ----------------------- */
  function chunkFrames(run, k) {
    var per = Math.max(1, Math.floor(run.positions.length / Math.max(1, run.chunks.length)));
    var out = [];
    for (var i = k * per; i < Math.min((k + 1) * per, run.positions.length); i++) out.push(i);
    return out;
  }

  function timeAxis(d) {
    var all = d.runs.every(function (r) { return r.times && r.times.length === r.positions.length; });
    return all ? {unit: "s", at: function (r, i) { return r.times[i]; }}
      : {unit: "decoded frame", at: function (r, i) { return r.positions[i]; }};
  }

  function frameStep(d, axis) {  // the smallest time between two planned frames: one frame's width
    var steps = [];
    d.runs.forEach(function (r) {
      var ts = r.positions.map(function (_, i) { return axis.at(r, i); }).sort(function (x, y) { return x - y; });
      for (var i = 1; i < ts.length; i++) if (ts[i] > ts[i - 1]) steps.push(ts[i] - ts[i - 1]);
    });
    return steps.length ? Math.min.apply(null, steps) : 1;
  }

  function evidenceWindow(d, axis) {
    var ev = d.evidence;
    if (!ev) return null;
    if (axis.unit === "s" && ev.seconds) return [ev.seconds[0], ev.seconds[1]];
    if (ev.frames && ev.frames.length) {
      if (axis.unit !== "s") return [Math.min.apply(null, ev.frames), Math.max.apply(null, ev.frames) + 1];
      // frame numbers -> seconds through the runs' own (index, time) pairs
      var lo = null, hi = null;
      d.runs.forEach(function (r) {
        (r.indices || []).forEach(function (idx, i) {
          if (ev.frames.indexOf(idx) >= 0 && r.times) {
            lo = lo === null ? r.times[i] : Math.min(lo, r.times[i]);
            hi = hi === null ? r.times[i] : Math.max(hi, r.times[i]);
          }
        });
      });
      return lo === null ? null : [lo, hi + frameStep(d, axis)];
    }
    return null;
  }

  function isEvidenceFrame(d, run, i, axis, win) {
    var ev = d.evidence;
    if (!ev) return false;
    if (ev.frames && ev.frames.length) {
      var idx = run.indices ? run.indices[i] : run.positions[i];
      return ev.frames.indexOf(idx) >= 0;
    }
    if (win) { var t = axis.at(run, i); return t >= win[0] && t <= win[1]; }
    return false;
  }

  var SVGNS = "http://www.w3.org/2000/svg";
  function s(tag, attrs) {
    var el = document.createElementNS(SVGNS, tag);
    for (var k in attrs) el.setAttribute(k, attrs[k]);
    return el;
  }

  function heatColor(x) {  // 0 -> pale, 1 -> deep blue
    var c0 = [239, 243, 255], c1 = [8, 48, 107];
    return "rgb(" + c0.map(function (v, i) { return Math.round(v + (c1[i] - v) * x); }).join(",") + ")";
  }

  function heatmap(d, axis, win) {
    var spans = [], maxTok = 0, maxT = 0, dt = frameStep(d, axis);
    d.runs.forEach(function (r, row) {
      (r.chunks || []).forEach(function (c, k) {
        var idx = chunkFrames(r, k);
        if (!idx.length) return;
        var t0 = axis.at(r, idx[0]), t1 = axis.at(r, idx[idx.length - 1]) + dt;
        var tok = r.chunk_tokens ? r.chunk_tokens[k] : null;
        spans.push({row: row, t0: t0, t1: t1, tok: tok, k: k, hw: c});
        maxTok = Math.max(maxTok, tok || 0);
        maxT = Math.max(maxT, t1);
      });
    });
    if (win) maxT = Math.max(maxT, win[1]);
    var left = 320, width = 760, rowH = 16, top = 8, n = d.runs.length;
    var H = top + n * rowH + 40;
    var svg = s("svg", {width: left + width + 20, height: H, "class": "heat", role: "img"});
    function x(t) { return left + (maxT > 0 ? t / maxT : 0) * width; }
    if (win) {
      svg.appendChild(s("rect", {x: x(win[0]), y: top - 4, width: Math.max(2, x(win[1]) - x(win[0])),
        height: n * rowH + 8, fill: "#fdb863", opacity: 0.45}));
    }
    d.runs.forEach(function (r, row) {
      var t = s("text", {x: left - 6, y: top + row * rowH + 12, "text-anchor": "end"});
      // an in-LLM or merged-token reduction keeps `keep` of these tokens; which chunk they came from is not recorded
      t.textContent = r.label + (r.reduction ? " → " + r.reduction.method + " " + r.reduction.keep : "");
      svg.appendChild(t);
    });
    spans.forEach(function (sp) {
      var rect = s("rect", {x: x(sp.t0), y: top + sp.row * rowH + 1, width: Math.max(1, x(sp.t1) - x(sp.t0) - 0.5),
        height: rowH - 2, fill: sp.tok === null ? "#ccc" : heatColor(maxTok ? sp.tok / maxTok : 0)});
      var title = s("title", {});
      title.textContent = d.runs[sp.row].label + " · chunk " + sp.k + " · " + sp.hw[0] + "×" + sp.hw[1] +
        " · " + fmt(sp.tok) + " tokens";
      rect.appendChild(title);
      svg.appendChild(rect);
    });
    var yAxis = top + n * rowH + 6;
    svg.appendChild(s("line", {x1: left, x2: left + width, y1: yAxis, y2: yAxis, stroke: "#888"}));
    for (var i = 0; i <= 5; i++) {
      var tv = maxT * i / 5;
      var lab = s("text", {x: x(tv), y: yAxis + 14, "text-anchor": "middle"});
      lab.textContent = fmt(Math.round(tv * 10) / 10);
      svg.appendChild(lab);
    }
    var cap = s("text", {x: left + width / 2, y: yAxis + 30, "text-anchor": "middle"});
    cap.textContent = "time (" + axis.unit + ") · colour: tokens per chunk before any reduction, darkest = " + maxTok +
      (win ? " · orange: " + (d.evidence.label || "evidence") : "");
    svg.appendChild(cap);
    return svg;
  }

  function samplePage(d) {
    var axis = timeAxis(d), win = evidenceWindow(d, axis);
    var head = document.getElementById("sample-head");
    var grid = h("div", {cls: "answer"});
    grid.appendChild(h("span", {text: "target"}));
    grid.appendChild(h("span", {text: typeof d.target === "string" ? d.target : JSON.stringify(d.target)}));
    if (d.evidence) {
      grid.appendChild(h("span", {text: "evidence"}));
      grid.appendChild(h("span", {text: (d.evidence.label || "") + (d.evidence.seconds ? " · " + d.evidence.seconds.join("–") + " s" : "") +
        (d.evidence.frames ? " · frames " + d.evidence.frames.join(",") : "") + (d.evidence.box ? " · box " + d.evidence.box.join(",") : "")}));
    }
    grid.appendChild(h("span", {text: "meta"}));
    grid.appendChild(h("span", {text: JSON.stringify(d.meta)}));
    head.appendChild(grid);
    if (d.note) head.appendChild(h("p", {cls: "warn", text: d.note}));
    if (axis.unit !== "s") head.appendChild(h("p", {cls: "note", text: "These records predate frame times; the time axis counts decoded frames."}));
    document.getElementById("heatmap").appendChild(heatmap(d, axis, win));

    var maxSide = 1;
    d.runs.forEach(function (r) { (r.chunks || []).forEach(function (c) { maxSide = Math.max(maxSide, c[0], c[1]); }); });
    var zoom = Math.min(2, 140 / maxSide);
    var draws = {};  // sprite src -> [{canvas, tile index, sprite, box}]
    var list = document.getElementById("runs");
    d.runs.forEach(function (r) {
      var box = h("div", {cls: "run", id: "run-" + r.key});
      var verdict = r.error ? h("span", {cls: "err", text: "error"}) :
        h("span", {cls: r.right ? "ok" : "bad", text: (r.right ? "✓ " : "✗ ") + r.metric + " " + fmt(r.score, 3)});
      box.appendChild(h("h3", null, h("a", {href: r.href, text: r.label}), " ", verdict));
      var ans = h("div", {cls: "answer"});
      function row(k, v) { ans.appendChild(h("span", {text: k})); ans.appendChild(h("span", null, v)); }
      row("prediction", h("pre", {text: r.error ? r.error : fmt(r.prediction)}));
      if (r.parsed !== null && r.parsed !== undefined) row("parsed", JSON.stringify(r.parsed));
      row("tokens", fmt(r.tokens) + " of " + fmt(r.vanilla) + " vanilla (retention " + fmt(r.retention, 3) + ")" +
        (r.reduction ? " · token reduction " + r.reduction.method + " keeps " + r.reduction.keep + " at layer " + r.reduction.layer : "") +
        (r.feasible === false ? " · budget infeasible" : "") + (r.note ? " · " + r.note : ""));
      box.appendChild(ans);
      if (r.sprite_error) box.appendChild(h("p", {cls: "warn", text: "no thumbnails: " + r.sprite_error}));
      var plan = h("div", {cls: "plan"});
      (r.chunks || []).forEach(function (c, k) {
        var idx = chunkFrames(r, k);
        var ev = idx.some(function (i) { return isEvidenceFrame(d, r, i, axis, win); });
        var frames = h("div", {cls: "frames"});
        idx.forEach(function (i) {
          var style = "width:" + Math.max(1, Math.round(c[1] * zoom)) + "px;height:" + Math.max(1, Math.round(c[0] * zoom)) + "px";
          if (r.sprite) {
            var cv = h("canvas", {width: c[1], height: c[0], style: style,
              title: "frame " + (r.indices ? r.indices[i] : r.positions[i]) + " at " + c[0] + "×" + c[1]});
            frames.appendChild(cv);
            (draws[r.sprite.src] = draws[r.sprite.src] || []).push({canvas: cv, tile: r.positions[i], sprite: r.sprite,
              box: isEvidenceFrame(d, r, i, axis, win) && d.evidence && d.evidence.box});
          } else {
            frames.appendChild(h("div", {cls: "blank", style: style}));
          }
        });
        var t = axis.at(r, idx[0]);
        plan.appendChild(h("div", {cls: "chunk" + (ev ? " evidence" : "")}, frames,
          h("div", {cls: "cap", text: "#" + k + " · " + c[0] + "×" + c[1] + " · " + fmt(r.chunk_tokens ? r.chunk_tokens[k] : null) +
            " tok · " + fmt(Math.round(t * 100) / 100) + (axis.unit === "s" ? " s" : "")})));
      });
      box.appendChild(plan);
      list.appendChild(box);
    });
    var pending = Object.keys(draws).length;
    Object.keys(draws).forEach(function (src) {
      var img = new Image();
      img.onload = function () {
        draws[src].forEach(function (job) {
          var sp = job.sprite, th = sp.tile[0], tw = sp.tile[1];
          var ctx = job.canvas.getContext("2d");
          ctx.imageSmoothingEnabled = true;
          ctx.imageSmoothingQuality = "high";
          var col = job.tile % sp.cols, rowi = Math.floor(job.tile / sp.cols);
          ctx.drawImage(img, col * tw, rowi * th, tw, th, 0, 0, job.canvas.width, job.canvas.height);
          if (job.box) {
            // probes record the box as [y0, x0, y1, x1] in source pixels
            var sx = job.canvas.width / sp.native[1], sy = job.canvas.height / sp.native[0];
            ctx.strokeStyle = "#e66100";
            ctx.lineWidth = Math.max(1, job.canvas.width / 40);
            ctx.strokeRect(job.box[1] * sx, job.box[0] * sy, (job.box[3] - job.box[1]) * sx, (job.box[2] - job.box[0]) * sy);
          }
        });
        if (--pending === 0) document.body.setAttribute("data-thumbs", "drawn");
      };
      img.src = src;
    });
    if (!Object.keys(draws).length) document.body.setAttribute("data-thumbs", "none");
  }

  document.addEventListener("DOMContentLoaded", function () {
    var d = pageData(), page = document.body.getAttribute("data-page");
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), makeSortable);
    if (page === "run") runPage(d);
    else if (page === "samples") samplesPage(d);
    else if (page === "sample") samplePage(d);
    document.body.setAttribute("data-ready", "1");
  });
})();
