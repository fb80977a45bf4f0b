// Face boxes in a greyscale working image, as matcher.faces.detect_faces finds them with OpenCV.
//
// A port of what the CLI runs: cv2.resize(INTER_AREA) to the recipe's detect_side, then
// cv2.CascadeClassifier.detectMultiScale over haarcascade_frontalface_default.xml (OpenCV 4.x, CPU
// path): per scale a bit-exact bilinear resize (INTER_LINEAR_EXACT), integral and squared-integral
// images, a 24x24 window slid 2 px apart below scale 2 and 1 px from 2 on (a window rejected by the
// first stage also skips the next x), variance normalisation over the window's inner 22x22 rect
// (windows with a standard deviation of 10 grey levels or less are never faces), stumps evaluated in
// float32 with stage sums in float64, then groupRectangles(minNeighbors, eps = 0.2). Arithmetic
// follows OpenCV's types (float32 via Math.fround, int32 wrap-around, round-half-even cvRound), so
// the boxes are the CLI's. The cascade comes from the server as JSON (matcher/web/cascade.py).
//
// Plain JS, no dependencies; the photo never leaves the browser.

const THRESHOLD_EPS = Math.fround(1e-5); // OpenCV subtracts it from every stage threshold when reading
const GROUP_EPS = 0.2;
const f32 = Math.fround;

/** OpenCV's cvRound / saturate_cast<int> from floating point (and Python's round): half to even. */
function roundEven(x) {
  const fl = Math.floor(x);
  const d = x - fl;
  if (d > 0.5) return fl + 1;
  if (d < 0.5) return fl;
  return fl % 2 === 0 ? fl : fl + 1;
}

// ---------------------------------------------------------------------------------------------
// The cascade: JSON -> typed arrays (cached per parsed JSON object)

const compiled = new WeakMap();

function compile(json) {
  let c = compiled.get(json);
  if (c) return c;
  if (!json || json.format !== "opencv-haar-stumps/1") throw new Error("faces.js: not an opencv-haar-stumps/1 cascade");
  const nstages = json.stages.length;
  const stageThr = new Float64Array(nstages);
  const stageLen = new Int32Array(nstages);
  let n = 0;
  for (const st of json.stages) n += st.stumps.length;
  const feat = new Int32Array(n);
  const thr = new Float64Array(n); // float32 values
  const left = new Float64Array(n);
  const right = new Float64Array(n);
  let k = 0;
  json.stages.forEach((st, i) => {
    stageThr[i] = f32(f32(st.threshold) - THRESHOLD_EPS);
    stageLen[i] = st.stumps.length;
    for (const [fi, t, l, r] of st.stumps) {
      if (!(fi >= 0 && fi < json.features.length)) throw new Error("faces.js: a stump names a missing feature");
      feat[k] = fi; thr[k] = f32(t); left[k] = f32(l); right[k] = f32(r); k++;
    }
  });
  const nf = json.features.length;
  const rects = new Int32Array(nf * 12); // x, y, w, h for 3 rects (unused: 0)
  const weights = new Float32Array(nf * 3);
  json.features.forEach((rs, i) => {
    if (!(rs.length >= 1 && rs.length <= 3)) throw new Error("faces.js: a feature must have 1 to 3 rects");
    rs.forEach(([x, y, w, h, wt], j) => {
      rects.set([x, y, w, h], i * 12 + j * 4);
      weights[i * 3 + j] = wt;
    });
  });
  const w0 = new Float64Array(n), w1 = new Float64Array(n), w2 = new Float64Array(n); // float32 values, per stump
  for (let i = 0; i < n; i++) {
    w0[i] = weights[feat[i] * 3]; w1[i] = weights[feat[i] * 3 + 1]; w2[i] = weights[feat[i] * 3 + 2];
  }
  c = { winW: json.width, winH: json.height, nstages, stageThr, stageLen, feat, thr, left, right, nf, rects, w0, w1, w2 };
  compiled.set(json, c);
  return c;
}

/** Fetch the cascade JSON (GET url, e.g. "/static/cascade.json"); the result is detectFaces's third argument. */
export async function loadCascade(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(`faces.js: cannot load the face cascade (${r.status})`);
  const json = await r.json();
  compile(json); // fail early on a malformed cascade
  return json;
}

// ---------------------------------------------------------------------------------------------
// Resizing, as cv2.resize does it for 8-bit single-channel images

/** cv2.resize(INTER_AREA) to dw x dh (a downscale), as OpenCV computes it. */
export function resizeArea(src, sw, sh, dw, dh) {
  if (dw === sw && dh === sh) return Uint8Array.from(src);
  const invX = dw / sw, invY = dh / sh;
  const scaleX = 1 / invX, scaleY = 1 / invY;
  if (scaleX < 1 || scaleY < 1) throw new Error("faces.js: resizeArea only shrinks");
  const isx = roundEven(scaleX), isy = roundEven(scaleY);
  const dst = new Uint8Array(dw * dh);
  if (Math.abs(scaleX - isx) < Number.EPSILON && Math.abs(scaleY - isy) < Number.EPSILON) {
    areaFast(src, sw, sh, dst, dw, dh, isx, isy);
    return dst;
  }
  const xtab = areaTab(sw, dw, scaleX), ytab = areaTab(sh, dh, scaleY);
  const buf = new Float32Array(dw), sum = new Float32Array(dw);
  let prevDy = ytab.di[0];
  for (let j = 0; j < ytab.n; j++) {
    const beta = ytab.alpha[j], dy = ytab.di[j], row = ytab.si[j] * sw;
    buf.fill(0);
    for (let k = 0; k < xtab.n; k++) {
      const d = xtab.di[k];
      buf[d] = f32(buf[d] + f32(src[row + xtab.si[k]] * xtab.alpha[k]));
    }
    if (dy !== prevDy) {
      const o = prevDy * dw;
      for (let x = 0; x < dw; x++) {
        dst[o + x] = sat8(roundEven(sum[x]));
        sum[x] = f32(beta * buf[x]);
      }
      prevDy = dy;
    } else {
      for (let x = 0; x < dw; x++) sum[x] = f32(sum[x] + f32(beta * buf[x]));
    }
  }
  const o = prevDy * dw;
  for (let x = 0; x < dw; x++) dst[o + x] = sat8(roundEven(sum[x]));
  return dst;
}

function sat8(v) {
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// OpenCV's computeResizeAreaTab: for each destination pixel, the source pixels it covers and their weights.
function areaTab(ssize, dsize, scale) {
  const di = [], si = [], alpha = [];
  for (let dx = 0; dx < dsize; dx++) {
    const fsx1 = dx * scale, fsx2 = fsx1 + scale;
    const cellWidth = Math.min(scale, ssize - fsx1);
    let sx1 = Math.ceil(fsx1), sx2 = Math.floor(fsx2);
    sx2 = Math.min(sx2, ssize - 1);
    sx1 = Math.min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) { di.push(dx); si.push(sx1 - 1); alpha.push(f32((sx1 - fsx1) / cellWidth)); }
    for (let sx = sx1; sx < sx2; sx++) { di.push(dx); si.push(sx); alpha.push(f32(1.0 / cellWidth)); }
    if (fsx2 - sx2 > 1e-3) {
      di.push(dx); si.push(sx2); alpha.push(f32(Math.min(Math.min(fsx2 - sx2, 1), cellWidth) / cellWidth));
    }
  }
  return { n: di.length, di: Int32Array.from(di), si: Int32Array.from(si), alpha: Float32Array.from(alpha) };
}

// Integer shrink factors: OpenCV averages each isx x isy block (its 2x2 SIMD path rounds half up).
function areaFast(src, sw, sh, dst, dw, dh, isx, isy) {
  const area = isx * isy, scale = f32(1 / area);
  const full = Math.floor(sw / isx);
  for (let dy = 0; dy < dh; dy++) {
    const sy0 = dy * isy;
    const w = sy0 + isy <= sh ? full : 0;
    let dx = 0;
    if (isx === 2 && isy === 2) {
      for (; dx < w; dx++) {
        const p = sy0 * sw + 2 * dx;
        dst[dy * dw + dx] = (src[p] + src[p + 1] + src[p + sw] + src[p + sw + 1] + 2) >> 2;
      }
    }
    for (; dx < w; dx++) {
      let s = 0;
      for (let y = 0; y < isy; y++) for (let x = 0; x < isx; x++) s += src[(sy0 + y) * sw + dx * isx + x];
      dst[dy * dw + dx] = sat8(roundEven(f32(s * scale)));
    }
    for (; dx < dw; dx++) {
      let s = 0, count = 0;
      const sx0 = dx * isx;
      for (let y = 0; y < isy && sy0 + y < sh; y++) {
        for (let x = 0; x < isx && sx0 + x < sw; x++) { s += src[(sy0 + y) * sw + sx0 + x]; count++; }
      }
      dst[dy * dw + dx] = count ? sat8(roundEven(f32(s / count))) : 0;
    }
  }
}

// INTER_LINEAR_EXACT coefficients along one axis: 8-bit fixed-point weights of the two neighbours.
function linearTab(ssize, dsize) {
  const scale = 1 / (dsize / ssize);
  const ofs = new Int32Array(dsize), c0 = new Uint16Array(dsize), c1 = new Uint16Array(dsize);
  let lo = 0, hi = dsize;
  for (let d = 0; d < dsize; d++) {
    const fval = scale * (d + 0.5) - 0.5;
    const ival = Math.floor(fval);
    if (ival >= 0 && ssize > 1) {
      if (ival < ssize - 1) {
        ofs[d] = ival;
        const frac = fval - ival;
        c1[d] = frac < 0 ? 0 : roundEven(frac * 256);
        c0[d] = 256 - c1[d];
      } else {
        ofs[d] = ssize - 1;
        hi = Math.min(hi, d);
      }
    } else {
      lo = Math.max(lo, d + 1);
    }
  }
  return { ofs, c0, c1, lo, hi };
}

/** cv2.resize(INTER_LINEAR_EXACT) of an 8-bit image to dw x dh (OpenCV's bit-exact bilinear). */
export function resizeLinearExact(src, sw, sh, dw, dh) {
  if (dw === sw && dh === sh) return Uint8Array.from(src);
  if (sw === 2 * dw && sh === 2 * dh) { // OpenCV switches to INTER_AREA for an exact halving
    const dst = new Uint8Array(dw * dh);
    areaFast(src, sw, sh, dst, dw, dh, 2, 2);
    return dst;
  }
  const X = linearTab(sw, dw), Y = linearTab(sh, dh);
  const lastX = X.ofs[dw - 1];
  // horizontal pass of one source row into 8-bit fixed point (value * 256)
  const hline = (row, out) => {
    const o = row * sw;
    let i = 0;
    for (; i < X.lo; i++) out[i] = src[o] << 8;
    for (; i < X.hi; i++) {
      const p = o + X.ofs[i];
      out[i] = X.c0[i] * src[p] + X.c1[i] * src[p + 1];
    }
    for (; i < dw; i++) out[i] = src[o + lastX] << 8;
  };
  const dst = new Uint8Array(dw * dh);
  const a = new Uint32Array(dw), b = new Uint32Array(dw);
  let rowA = -1, rowB = -1; // which source rows a and b hold
  const line = (row, buf) => { hline(row, buf); return row; };
  for (let dy = 0; dy < dh; dy++) {
    const o = dy * dw;
    if (dy < Y.lo || dy >= Y.hi) {
      const row = dy < Y.lo ? 0 : sh - 1;
      if (rowA !== row) rowA = line(row, a);
      for (let x = 0; x < dw; x++) dst[o + x] = (a[x] + 128) >> 8;
      continue;
    }
    const iy = Y.ofs[dy];
    if (rowA !== iy) {
      if (rowB === iy) { a.set(b); rowA = iy; } else rowA = line(iy, a);
    }
    if (rowB !== iy + 1) rowB = line(iy + 1, b);
    const c0 = Y.c0[dy], c1 = Y.c1[dy];
    for (let x = 0; x < dw; x++) dst[o + x] = (a[x] * c0 + b[x] * c1 + 32768) >>> 16;
  }
  return dst;
}

// ---------------------------------------------------------------------------------------------
// detectMultiScale

/** Integral and squared-integral images ((w+1) x (h+1), int32; the squares wrap as OpenCV's do). */
function integrals(img, w, h) {
  const W = w + 1;
  const sum = new Int32Array(W * (h + 1)), sq = new Int32Array(W * (h + 1));
  for (let y = 0; y < h; y++) {
    let s = 0, q = 0;
    const i0 = y * w, o = (y + 1) * W, p = y * W;
    for (let x = 0; x < w; x++) {
      const v = img[i0 + x];
      s += v; q += v * v;
      sum[o + x + 1] = sum[p + x + 1] + s;
      sq[o + x + 1] = (sq[p + x + 1] + q) | 0;
    }
  }
  return { sum, sq, stride: W };
}

// The cascade on one window (predictOrderedStump): 1 = a face, else -(index of the rejecting stage).
// Feature sums are int32, feature values float32, stage sums float64, as in OpenCV.
function runStages(sum, p, vnf, ofs, w0, w1, w2, thr, left, right, stageLen, stageThr, nstages) {
  let k = 0;
  for (let s = 0; s < nstages; s++) {
    let t = 0;
    const end = k + stageLen[s];
    for (; k < end; k++) {
      const o = k * 12;
      let v = f32(f32(w0[k] * (sum[p + ofs[o]] - sum[p + ofs[o + 1]] - sum[p + ofs[o + 2]] + sum[p + ofs[o + 3]]))
        + f32(w1[k] * (sum[p + ofs[o + 4]] - sum[p + ofs[o + 5]] - sum[p + ofs[o + 6]] + sum[p + ofs[o + 7]])));
      if (w2[k] !== 0) {
        v = f32(v + f32(w2[k] * (sum[p + ofs[o + 8]] - sum[p + ofs[o + 9]] - sum[p + ofs[o + 10]] + sum[p + ofs[o + 11]])));
      }
      t += f32(v * vnf) < thr[k] ? left[k] : right[k];
    }
    if (t < stageThr[s]) return -s;
  }
  return 1;
}

/** Candidate windows over all scales (OpenCV's detectMultiScaleNoGrouping), in OpenCV's single-thread order. */
function candidates(img, w, h, C, scaleFactor, minSize, maxSize) {
  const out = [];
  const winW = C.winW, winH = C.winH;
  if (h < winH || w < winW) return out;
  const maxW = maxSize ? maxSize[0] : w, maxH = maxSize ? maxSize[1] : h;
  const all = [];
  for (let factor = 1; ; factor *= scaleFactor) {
    if (roundEven(winW * factor) > w || roundEven(winH * factor) > h) break;
    all.push(f32(factor));
  }
  let scales = [];
  for (const s of all) {
    const ww = roundEven(f32(winW * s)), wh = roundEven(f32(winH * s));
    if (ww > maxW || wh > maxH) break;
    if (ww < minSize[0] || wh < minSize[1]) continue;
    scales.push(s);
  }
  if (!scales.length && all.length) { // no scale fits minSize..maxSize: OpenCV takes the closest one
    let best = 0, bestD = Infinity;
    all.forEach((s, i) => {
      const dw = minSize[0] - roundEven(f32(winW * s)), dh = minSize[1] - roundEven(f32(winH * s));
      const d = dw * dw + dh * dh;
      if (d < bestD) { bestD = d; best = i; }
    });
    scales = [all[best]];
  }
  const { stageThr, stageLen, nstages, thr, left, right } = C;
  const nst = C.feat.length;
  const ofs = new Int32Array(nst * 12); // per stump: the 4 integral corners of its 3 rects
  const normArea = (winW - 2) * (winH - 2);
  for (const sc of scales) {
    const sw = roundEven(f32(w / sc)), sh = roundEven(f32(h / sc));
    const ystep = sc >= 2 ? 1 : 2;
    const img2 = resizeLinearExact(img, w, h, sw, sh);
    const { sum, sq, stride } = integrals(img2, sw, sh);
    for (let k = 0; k < nst; k++) {
      const fi = C.feat[k];
      for (let j = 0; j < 3; j++) {
        const r = fi * 12 + j * 4, o = k * 12 + j * 4;
        const x = C.rects[r], y = C.rects[r + 1], rw = C.rects[r + 2], rh = C.rects[r + 3];
        ofs[o] = y * stride + x;
        ofs[o + 1] = y * stride + x + rw;
        ofs[o + 2] = (y + rh) * stride + x;
        ofs[o + 3] = (y + rh) * stride + x + rw;
      }
    }
    const n0 = stride + 1, n1 = stride + 1 + (winW - 2), n2 = (winH - 1) * stride + 1, n3 = (winH - 1) * stride + winW - 1;
    const szwW = sw + 1 - winW, szwH = sh + 1 - winH;
    const boxW = roundEven(f32(winW * sc)), boxH = roundEven(f32(winH * sc));
    for (let y = 0; y < szwH; y += ystep) {
      for (let x = 0; x < szwW; x += ystep) {
        const p = y * stride + x;
        // variance normalisation (HaarEvaluator::setWindow)
        const vs = sum[p + n0] - sum[p + n1] - sum[p + n2] + sum[p + n3];
        const vq = (sq[p + n0] - sq[p + n1] - sq[p + n2] + sq[p + n3]) >>> 0;
        const nf = normArea * vq - vs * vs;
        if (!(nf > 0)) continue; // setWindow fails: result -1, no skip
        const vnf = f32(1 / Math.sqrt(nf));
        if (!(normArea * vnf < 0.1)) continue;
        const result = runStages(sum, p, vnf, ofs, C.w0, C.w1, C.w2, thr, left, right, stageLen, stageThr, nstages);
        if (result > 0) out.push([roundEven(f32(x * sc)), roundEven(f32(y * sc)), boxW, boxH]);
        else if (result === 0) x += ystep;
      }
    }
  }
  return out;
}

function similar(a, b, eps) {
  const delta = eps * (Math.min(a[2], b[2]) + Math.min(a[3], b[3])) * 0.5;
  return Math.abs(a[0] - b[0]) <= delta && Math.abs(a[1] - b[1]) <= delta &&
    Math.abs(a[0] + a[2] - b[0] - b[2]) <= delta && Math.abs(a[1] + a[3] - b[1] - b[3]) <= delta;
}

/** OpenCV's groupRectangles(rects, groupThreshold, eps): clusters of more than groupThreshold similar boxes, averaged. */
export function groupRectangles(rects, groupThreshold, eps = GROUP_EPS) {
  const n = rects.length;
  if (groupThreshold <= 0 || n === 0) return rects.slice();
  // connected components of the similarity relation (cv::partition); classes numbered by first member
  const parent = new Int32Array(n).map((_, i) => i);
  const find = (i) => { while (parent[i] !== i) { parent[i] = parent[parent[i]]; i = parent[i]; } return i; };
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      if (similar(rects[i], rects[j], eps)) {
        const a = find(i), b = find(j);
        if (a !== b) parent[Math.max(a, b)] = Math.min(a, b);
      }
    }
  }
  const label = new Map(), labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const r = find(i);
    if (!label.has(r)) label.set(r, label.size);
    labels[i] = label.get(r);
  }
  const nc = label.size;
  const acc = Array.from({ length: nc }, () => [0, 0, 0, 0]);
  const cnt = new Int32Array(nc);
  for (let i = 0; i < n; i++) {
    const a = acc[labels[i]], r = rects[i];
    a[0] += r[0]; a[1] += r[1]; a[2] += r[2]; a[3] += r[3];
    cnt[labels[i]]++;
  }
  const avg = acc.map((a, c) => {
    const s = f32(1 / cnt[c]);
    return a.map((v) => roundEven(f32(v * s)));
  });
  const out = [];
  for (let i = 0; i < nc; i++) {
    const r1 = avg[i], n1 = cnt[i];
    if (n1 <= groupThreshold) continue;
    let inside = false;
    for (let j = 0; j < nc && !inside; j++) {
      const n2 = cnt[j];
      if (j === i || n2 <= groupThreshold) continue;
      const r2 = avg[j];
      const dx = roundEven(r2[2] * eps), dy = roundEven(r2[3] * eps);
      inside = r1[0] >= r2[0] - dx && r1[1] >= r2[1] - dy && r1[0] + r1[2] <= r2[0] + r2[2] + dx &&
        r1[1] + r1[3] <= r2[1] + r2[3] + dy && (n2 > Math.max(3, n1) || n1 < 3);
    }
    if (!inside) out.push(r1);
  }
  return out;
}

/**
 * cv2.CascadeClassifier(cascade).detectMultiScale(img, scaleFactor, minNeighbors, minSize=minSize)
 * for an 8-bit greyscale image {w, h, data}: [[x, y, w, h], ...] in OpenCV's output order.
 */
export function detectMultiScale(img, cascade, { scaleFactor = 1.1, minNeighbors = 3, minSize = [0, 0], maxSize = null } = {}) {
  if (!(scaleFactor > 1)) throw new Error("faces.js: scaleFactor must be > 1");
  const C = compile(cascade);
  const cands = candidates(img.data, img.w, img.h, C, scaleFactor, minSize, maxSize);
  const boxes = groupRectangles(cands, minNeighbors, GROUP_EPS);
  const out = [];
  for (const [x, y, bw, bh] of boxes) { // clipObjects: keep the part inside the image
    const x0 = Math.max(x, 0), y0 = Math.max(y, 0);
    const x1 = Math.min(x + bw, img.w), y1 = Math.min(y + bh, img.h);
    if (x1 > x0 && y1 > y0) out.push([x0, y0, x1 - x0, y1 - y0]);
  }
  return out;
}

/**
 * Frontal faces in the working image, as matcher.faces.detect_faces returns them.
 * work: {w, h, data: Uint8Array greyscale, row-major}; opts: the recipe's "faces" object
 * ({detect_side, scale_step, min_neighbors, max_faces}); cascade: the parsed cascade JSON (loadCascade).
 * Returns [[x, y, w, h], ...] in work pixels, largest first, at most opts.max_faces.
 */
export function detectFaces(work, opts, cascade) {
  const { w, h, data } = work;
  if (!data || data.length < w * h) throw new Error("faces.js: work.data must hold w*h grey pixels");
  if (Math.min(w, h) < 48) return [];
  const side = opts.detect_side ?? 256, step = opts.scale_step ?? 1.2;
  const minNeighbors = opts.min_neighbors ?? 5, maxFaces = opts.max_faces ?? 8;
  const f = Math.min(1.0, side / Math.max(w, h));
  let small = { w, h, data };
  if (f !== 1.0) {
    const sw = roundEven(w * f), sh = roundEven(h * f);
    if (sw < 1 || sh < 1) return []; // (cv2.resize would refuse an empty size)
    small = { w: sw, h: sh, data: resizeArea(data, w, h, sw, sh) };
  }
  const minSide = Math.max(18, Math.trunc(Math.min(small.w, small.h) * 0.04));
  const found = detectMultiScale(small, cascade, { scaleFactor: step, minNeighbors, minSize: [minSide, minSide] });
  const boxes = found.map((b) => b.map((v) => roundEven(v / f)));
  boxes.sort((a, b) => b[2] * b[3] - a[2] * a[3]); // stable: ties keep OpenCV's order
  return boxes.slice(0, maxFaces);
}
