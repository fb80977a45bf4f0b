// The web check's hasher: decode a photo in the browser, hash it as the CLI does, verify candidates.
//
// A port of the Python query side, so that a page computes the same hashes as `matcher search`
// without the photo leaving the browser:
//   load_image + QUERY_DRAFT/QUERY_SIDE (matcher/images.py, matcher/workers.py query_one),
//   the variants of matcher/regions.py query_variants (as described by the server's recipe,
//   matcher/recipe.py), pHash (matcher/hashers/phash.py), verification (matcher/verify.py align,
//   cell_score; matcher/workers.py verify_batch without the full-detail check).
// The resampling routines reproduce Pillow's (Resample.c, Reduce.c) and OpenCV's (INTER_AREA
// resize, INTER_LINEAR warpAffine) integer/float arithmetic, so that the same greyscale pixels
// give the same 32x32 pixels. What cannot be identical is the decoder: Python decodes JPEGs at
// 1/2..1/8 scale in the DCT domain (libjpeg) and only their luminance; the browser decodes full
// RGB, which is converted to grey as Pillow does and averaged over the same blocks.
//
// Plain ES module: no dependencies, no build step, no eval.

const PRECISION_BITS = 22; // Pillow: 32 - 8 - 2
const PREC_ONE = 4194304; // 1 << PRECISION_BITS
const PREC_HALF = 2097152;

// ---------------------------------------------------------------------------------------------
// Small numeric helpers
// ---------------------------------------------------------------------------------------------

/** Python's round() of a float (half to even). */
function pyRound(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** OpenCV's cvRound / saturate_cast<int> (half to even, as the FPU rounds). */
const cvRound = pyRound;

const clip8 = (v) => (v < 0 ? 0 : v > 255 ? 255 : v);

/** Python's f"{x:+g}" for the angles and scales of the recipe (short decimals). */
function fmtSignedG(x) {
  const s = fmtG(x);
  return x >= 0 && !Object.is(x, -0) ? `+${s}` : s;
}

function fmtG(x) {
  if (Number.isInteger(x)) return String(x);
  let s = x.toPrecision(6);
  if (s.includes("e")) return String(x);
  if (s.includes(".")) s = s.replace(/0+$/, "").replace(/\.$/, "");
  return s;
}

function gray(w, h, data) {
  return { w, h, data: data || new Uint8Array(w * h) };
}

// ---------------------------------------------------------------------------------------------
// Pillow resampling (Image.resize, Image.reduce, Image.thumbnail) for mode "L"
// ---------------------------------------------------------------------------------------------

const FILTERS = {
  box: { support: 0.5, fn: (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0) },
  bilinear: {
    support: 1.0,
    fn: (x) => {
      if (x < 0.0) x = -x;
      return x < 1.0 ? 1.0 - x : 0.0;
    },
  },
  lanczos: {
    support: 3.0,
    fn: (x) => (-3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0),
  },
};

function sinc(x) {
  if (x === 0.0) return 1.0;
  x *= Math.PI;
  return Math.sin(x) / x;
}

/** Resample.c precompute_coeffs + normalize_coeffs_8bpc: integer weights per output pixel. */
function precomputeCoeffs(inSize, in0, in1, outSize, filter) {
  in0 = Math.fround(in0);
  in1 = Math.fround(in1);
  const scale = Math.fround(in1 - in0) / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const kk = new Int32Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  const w = new Float64Array(ksize);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let ww = 0.0;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    for (let x = 0; x < xmax; x++) {
      const v = filter.fn((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0.0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * PREC_ONE) : Math.trunc(0.5 + v * PREC_ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, kk, bounds };
}

/** Resample.c ImagingResample for an 8-bit grey image; box = [l, t, r, b] (floats). Two separable passes,
 *  each rounded to 8 bits; Pillow >= 13 runs the vertical pass first when the height shrinks by more
 *  than twice as many pixels as the width (python-pillow/Pillow#9549; measured on Pillow 13.0). */
function pilResample(img, xsize, ysize, filter, box) {
  const needH = xsize !== img.w || box[0] !== 0 || box[2] !== xsize;
  const needV = ysize !== img.h || box[1] !== 0 || box[3] !== ysize;
  const verticalFirst = ysize < img.h && img.h - ysize > 2 * (img.w - xsize);
  const hor = precomputeCoeffs(img.w, box[0], box[2], xsize, filter);
  const vert = precomputeCoeffs(img.h, box[1], box[3], ysize, filter);
  let cur = img;
  let done = false;
  if (verticalFirst) {
    if (needV) {
      cur = resampleV(cur, vert, ysize);
      done = true;
    }
    if (needH) {
      cur = resampleH(cur, hor, xsize, 0, cur.h);
      done = true;
    }
  } else {
    if (needH) {
      // only the rows the vertical pass reads
      const yFirst = vert.bounds[0];
      const yLast = vert.bounds[ysize * 2 - 2] + vert.bounds[ysize * 2 - 1];
      for (let i = 0; i < ysize; i++) vert.bounds[i * 2] -= yFirst;
      cur = resampleH(cur, hor, xsize, yFirst, yLast - yFirst);
      done = true;
    }
    if (needV) {
      cur = resampleV(cur, vert, ysize);
      done = true;
    }
  }
  return done ? cur : gray(img.w, img.h, img.data.slice());
}

function resampleH(img, coeffs, xsize, yOffset, rows) {
  const out = gray(xsize, rows);
  const src = img.data;
  const { ksize, kk, bounds } = coeffs;
  for (let yy = 0; yy < rows; yy++) {
    const row = (yy + yOffset) * img.w;
    for (let xx = 0; xx < xsize; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      const k = xx * ksize;
      let s = PREC_HALF;
      for (let x = 0; x < xmax; x++) s += src[row + x + xmin] * kk[k + x];
      out.data[yy * xsize + xx] = clip8(Math.floor(s / PREC_ONE));
    }
  }
  return out;
}

function resampleV(img, coeffs, ysize) {
  const out = gray(img.w, ysize);
  const src = img.data;
  const W = img.w;
  const { ksize, kk, bounds } = coeffs;
  for (let yy = 0; yy < ysize; yy++) {
    const ymin = bounds[yy * 2];
    const ymax = bounds[yy * 2 + 1];
    const k = yy * ksize;
    for (let xx = 0; xx < W; xx++) {
      let s = PREC_HALF;
      for (let y = 0; y < ymax; y++) s += src[(y + ymin) * W + xx] * kk[k + y];
      out.data[yy * W + xx] = clip8(Math.floor(s / PREC_ONE));
    }
  }
  return out;
}

/** Reduce.c: the multiplier of the rounded division by n (computed in single precision there). */
function reduceMultiplier(n) {
  return Math.trunc(Math.fround(4294967296 / Math.fround(256 * n)));
}

/** Image.reduce((fx, fy), box) of an 8-bit grey image (Reduce.c, including the partial last row/column). */
function pilReduce(img, fx, fy, box) {
  const [b0, b1, b2, b3] = box || [0, 0, img.w, img.h];
  if (fx === 1 && fy === 1) return crop(img, b0, b1, b2, b3);
  const bw = b2 - b0;
  const bh = b3 - b1;
  const ow = Math.floor((bw + fx - 1) / fx);
  const oh = Math.floor((bh + fy - 1) / fy);
  const out = gray(ow, oh);
  const src = img.data;
  const W = img.w;
  for (let y = 0; y < oh; y++) {
    const y0 = b1 + y * fy;
    const y1 = Math.min(y0 + fy, b3);
    for (let x = 0; x < ow; x++) {
      const x0 = b0 + x * fx;
      const x1 = Math.min(x0 + fx, b2);
      const n = (x1 - x0) * (y1 - y0);
      let ss = Math.floor(n / 2);
      for (let yy = y0; yy < y1; yy++) {
        const row = yy * W;
        for (let xx = x0; xx < x1; xx++) ss += src[row + xx];
      }
      out.data[y * ow + x] = Math.floor((ss * reduceMultiplier(n)) / 16777216);
    }
  }
  return out;
}

function crop(img, l, t, r, b) {
  const out = gray(r - l, b - t);
  if (l >= 0 && t >= 0 && r <= img.w && b <= img.h) {
    for (let y = t; y < b; y++) out.data.set(img.data.subarray(y * img.w + l, y * img.w + r), (y - t) * out.w);
    return out;
  }
  for (let y = t; y < b; y++) {
    for (let x = l; x < r; x++) {
      out.data[(y - t) * out.w + (x - l)] = y >= 0 && y < img.h && x >= 0 && x < img.w ? img.data[y * img.w + x] : 0;
    }
  }
  return out;
}

/** Image.resize(size, filter, box, reducing_gap) for mode "L" (Image.py: reduce first, then resample). */
function pilResize(img, xsize, ysize, filterName, box = null, reducingGap = null) {
  const filter = FILTERS[filterName];
  if (!box) box = [0, 0, img.w, img.h];
  if (img.w === xsize && img.h === ysize && box[0] === 0 && box[1] === 0 && box[2] === img.w && box[3] === img.h) {
    return gray(img.w, img.h, img.data.slice());
  }
  if (reducingGap !== null) {
    const factorX = Math.trunc((box[2] - box[0]) / xsize / reducingGap) || 1;
    const factorY = Math.trunc((box[3] - box[1]) / ysize / reducingGap) || 1;
    if (factorX > 1 || factorY > 1) {
      // Image._get_safe_box
      const support = filter.support - 0.5;
      const sx = support * ((box[2] - box[0]) / xsize);
      const sy = support * ((box[3] - box[1]) / ysize);
      const rb = [
        Math.max(0, Math.trunc(box[0] - sx)),
        Math.max(0, Math.trunc(box[1] - sy)),
        Math.min(img.w, Math.ceil(box[2] + sx)),
        Math.min(img.h, Math.ceil(box[3] + sy)),
      ];
      img = pilReduce(img, factorX, factorY, rb);
      box = [
        (box[0] - rb[0]) / factorX,
        (box[1] - rb[1]) / factorY,
        (box[2] - rb[0]) / factorX,
        (box[3] - rb[1]) / factorY,
      ];
    }
  }
  return pilResample(img, xsize, ysize, filter, box);
}

/** Image.thumbnail((maxW, maxH), LANCZOS) of a decoded (non-JPEG-draft) image: reducing_gap 2.0. */
function pilThumbnail(img, maxW, maxH) {
  const size = thumbnailSize(img.w, img.h, maxW, maxH);
  if (!size) return img;
  if (size[0] === img.w && size[1] === img.h) return img;
  return pilResize(img, size[0], size[1], "lanczos", null, 2.0);
}

/** Image.thumbnail's preserve_aspect_ratio: the final size, or null when the image already fits. */
function thumbnailSize(w, h, maxW, maxH) {
  let x = Math.floor(maxW);
  let y = Math.floor(maxH);
  if (x >= w && y >= h) return null;
  const aspect = w / h;
  const roundAspect = (number, key) => {
    const lo = Math.floor(number);
    const hi = Math.ceil(number);
    return Math.max(key(hi) < key(lo) ? hi : lo, 1);
  };
  if (x / y >= aspect) {
    x = roundAspect(y * aspect, (n) => Math.abs(aspect - n / y));
  } else {
    y = roundAspect(x / aspect, (n) => (n === 0 ? 0 : Math.abs(aspect - x / n)));
  }
  return [x, y];
}

// ---------------------------------------------------------------------------------------------
// OpenCV: resize INTER_AREA, warpAffine INTER_LINEAR (8-bit, one channel)
// ---------------------------------------------------------------------------------------------

/** cv2.resize(src, (dw, dh), interpolation=cv2.INTER_AREA). */
function cvResizeArea(src, dw, dh) {
  const sw = src.w;
  const sh = src.h;
  if (sw === dw && sh === dh) return gray(sw, sh, src.data.slice());
  const invX = dw / sw;
  const invY = dh / sh;
  const scaleX = 1 / invX;
  const scaleY = 1 / invY;
  const iscaleX = cvRound(scaleX);
  const iscaleY = cvRound(scaleY);
  const fast = Math.abs(scaleX - iscaleX) < Number.EPSILON && Math.abs(scaleY - iscaleY) < Number.EPSILON;
  if (scaleX >= 1 && scaleY >= 1) {
    return fast ? cvAreaFast(src, dw, dh, iscaleX, iscaleY) : cvAreaGeneric(src, dw, dh, scaleX, scaleY);
  }
  return cvAreaUpscale(src, dw, dh, scaleX, scaleY, invX, invY);
}

function cvAreaFast(src, dw, dh, sx, sy) {
  // ResizeAreaFast_Invoker: 2x2 by (sum + 2) >> 2, other integer factors by round(sum * (1/area))
  const out = gray(dw, dh);
  const S = src.data;
  const W = src.w;
  const area = sx * sy;
  const scale = Math.fround(1 / area);
  const dwidth1 = Math.floor(W / sx);
  for (let dy = 0; dy < dh; dy++) {
    const y0 = dy * sy;
    if (y0 >= src.h) continue;
    const full = y0 + sy <= src.h;
    for (let dx = 0; dx < dw; dx++) {
      const x0 = dx * sx;
      if (full && dx < dwidth1) {
        let sum = 0;
        for (let yy = 0; yy < sy; yy++) for (let xx = 0; xx < sx; xx++) sum += S[(y0 + yy) * W + x0 + xx];
        out.data[dy * dw + dx] = sx === 2 && sy === 2 ? (sum + 2) >> 2 : clip8(cvRound(Math.fround(sum * scale)));
      } else {
        let sum = 0;
        let count = 0;
        for (let yy = 0; yy < sy && y0 + yy < src.h; yy++) {
          for (let xx = 0; xx < sx && x0 + xx < W; xx++) {
            sum += S[(y0 + yy) * W + x0 + xx];
            count++;
          }
        }
        out.data[dy * dw + dx] = count ? clip8(cvRound(Math.fround(Math.fround(sum) / count))) : 0;
      }
    }
  }
  return out;
}

/** computeResizeAreaTab: (destination index, source index, weight) triples along one axis. */
function areaTab(ssize, dsize, scale) {
  const cap = 2 * ssize + 2 * dsize + 2;
  const di = new Int32Array(cap);
  const si = new Int32Array(cap);
  const alpha = new Float32Array(cap);
  let k = 0;
  for (let dx = 0; dx < dsize; dx++) {
    const fsx1 = dx * scale;
    const fsx2 = fsx1 + scale;
    const cellWidth = Math.min(scale, ssize - fsx1);
    let sx1 = Math.ceil(fsx1);
    let sx2 = Math.floor(fsx2);
    sx2 = Math.min(sx2, ssize - 1);
    sx1 = Math.min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) {
      di[k] = dx;
      si[k] = sx1 - 1;
      alpha[k++] = (sx1 - fsx1) / cellWidth;
    }
    for (let sx = sx1; sx < sx2; sx++) {
      di[k] = dx;
      si[k] = sx;
      alpha[k++] = 1.0 / cellWidth;
    }
    if (fsx2 - sx2 > 1e-3) {
      di[k] = dx;
      si[k] = sx2;
      alpha[k++] = Math.min(Math.min(fsx2 - sx2, 1.0), cellWidth) / cellWidth;
    }
  }
  return { n: k, di, si, alpha }; // Float32Array stores round to single precision, as (float) does
}

function cvAreaGeneric(src, dw, dh, scaleX, scaleY) {
  // ResizeArea_Invoker<uchar, float>: single-precision sums, rounded half to even
  const xt = areaTab(src.w, dw, scaleX);
  const yt = areaTab(src.h, dh, scaleY);
  const out = gray(dw, dh);
  const S = src.data;
  const buf = new Float32Array(dw); // each store rounds to single precision, as the C++ float arithmetic
  const sum = new Float32Array(dw);
  const f = Math.fround;
  const { di: xdi, si: xsi, alpha: xal, n: xn } = xt;
  let prev = yt.di[0];
  for (let j = 0; j < yt.n; j++) {
    const beta = yt.alpha[j];
    const dy = yt.di[j];
    const row = yt.si[j] * src.w;
    buf.fill(0);
    for (let k = 0; k < xn; k++) buf[xdi[k]] += f(S[row + xsi[k]] * xal[k]);
    if (dy !== prev) {
      for (let dx = 0; dx < dw; dx++) {
        out.data[prev * dw + dx] = clip8(cvRound(sum[dx]));
        sum[dx] = beta * buf[dx];
      }
      prev = dy;
    } else {
      for (let dx = 0; dx < dw; dx++) sum[dx] += f(beta * buf[dx]);
    }
  }
  for (let dx = 0; dx < dw; dx++) out.data[prev * dw + dx] = clip8(cvRound(sum[dx]));
  return out;
}

function cvAreaUpscale(src, dw, dh, scaleX, scaleY, invX, invY) {
  // INTER_AREA when a side grows: OpenCV's bilinear emulation (fixed point, 11-bit weights)
  const ONE = 2048;
  const coefs = (dsize, ssize, scale, inv) => {
    const ofs = new Int32Array(dsize);
    const a = new Int32Array(dsize * 2);
    let lim = dsize;
    for (let d = 0; d < dsize; d++) {
      let s = Math.floor(d * scale);
      let fr = Math.fround(d + 1 - (s + 1) * inv);
      fr = fr <= 0 ? 0 : Math.fround(fr - Math.floor(fr));
      if (s < 0) {
        fr = 0;
        s = 0;
      }
      if (s + 1 >= ssize) {
        lim = Math.min(lim, d);
        if (s >= ssize - 1) {
          fr = 0;
          s = ssize - 1;
        }
      }
      ofs[d] = s;
      a[d * 2] = clip16(cvRound(Math.fround(1 - fr) * ONE));
      a[d * 2 + 1] = clip16(cvRound(fr * ONE));
    }
    return { ofs, a, lim };
  };
  const X = coefs(dw, src.w, scaleX, invX);
  const Y = coefs(dh, src.h, scaleY, invY);
  const hrow = (sy) => {
    const r = new Int32Array(dw);
    const base = sy * src.w;
    for (let dx = 0; dx < dw; dx++) {
      const s = X.ofs[dx];
      r[dx] = dx < X.lim ? src.data[base + s] * X.a[dx * 2] + src.data[base + s + 1] * X.a[dx * 2 + 1] : src.data[base + s] * ONE;
    }
    return r;
  };
  const out = gray(dw, dh);
  for (let dy = 0; dy < dh; dy++) {
    const sy = Y.ofs[dy];
    const r0 = hrow(Math.min(Math.max(sy, 0), src.h - 1));
    const r1 = hrow(Math.min(Math.max(sy + 1, 0), src.h - 1));
    const b0 = Y.a[dy * 2];
    const b1 = Y.a[dy * 2 + 1];
    const simd = dw - (dw % 16);
    for (let dx = 0; dx < dw; dx++) {
      let v;
      if (dx < simd) {
        v = (mulHi16(r0[dx] >> 4, b0) + mulHi16(r1[dx] >> 4, b1) + 2) >> 2;
      } else {
        v = (r0[dx] * b0 + r1[dx] * b1 + (1 << 21)) >> 22;
      }
      out.data[dy * dw + dx] = clip8(v);
    }
  }
  return out;
}

const clip16 = (v) => (v < -32768 ? -32768 : v > 32767 ? 32767 : v);
const mulHi16 = (a, b) => Math.floor((clip16(a) * b) / 65536);

/** cv2.getRotationMatrix2D(((w-1)/2, (h-1)/2), angle, 1) shifted onto a (cw x ch) canvas, then
 *  cv2.warpAffine(..., INTER_LINEAR, BORDER_CONSTANT, fill): OpenCV's 5-bit fixed-point bilinear. */
function cvRotate(src, angle, cw, ch, fill) {
  const w = src.w;
  const h = src.h;
  const cx = Math.fround((w - 1) / 2);
  const cy = Math.fround((h - 1) / 2);
  const a = angle * (Math.PI / 180);
  const alpha = Math.cos(a);
  const beta = Math.sin(a);
  const M = [alpha, beta, (1 - alpha) * cx - beta * cy, -beta, alpha, beta * cx + (1 - alpha) * cy];
  M[2] += (cw - w) / 2;
  M[5] += (ch - h) / 2;
  // invert (warpAffine without WARP_INVERSE_MAP)
  let D = M[0] * M[4] - M[1] * M[3];
  D = D !== 0 ? 1 / D : 0;
  const A11 = M[4] * D;
  const A22 = M[0] * D;
  M[0] = A11;
  M[1] *= -D;
  M[3] *= -D;
  M[4] = A22;
  const b1 = -M[0] * M[2] - M[1] * M[5];
  const b2 = -M[3] * M[2] - M[4] * M[5];
  M[2] = b1;
  M[5] = b2;
  const AB = 1024;
  const roundDelta = 16; // AB_SCALE / INTER_TAB_SIZE / 2
  const adelta = new Int32Array(cw);
  const bdelta = new Int32Array(cw);
  for (let x = 0; x < cw; x++) {
    adelta[x] = cvRound(M[0] * x * AB);
    bdelta[x] = cvRound(M[3] * x * AB);
  }
  const out = gray(cw, ch);
  const S = src.data;
  for (let y = 0; y < ch; y++) {
    const X0 = cvRound((M[1] * y + M[2]) * AB) + roundDelta;
    const Y0 = cvRound((M[4] * y + M[5]) * AB) + roundDelta;
    for (let x = 0; x < cw; x++) {
      const X = (X0 + adelta[x]) >> 5;
      const Y = (Y0 + bdelta[x]) >> 5;
      const sx = X >> 5;
      const sy = Y >> 5;
      const fx = X & 31;
      const fy = Y & 31;
      let v;
      if (sx >= w || sx + 1 < 0 || sy >= h || sy + 1 < 0) {
        v = fill;
      } else {
        const inX0 = sx >= 0 && sx < w;
        const inX1 = sx + 1 >= 0 && sx + 1 < w;
        const inY0 = sy >= 0 && sy < h;
        const inY1 = sy + 1 >= 0 && sy + 1 < h;
        const p00 = inX0 && inY0 ? S[sy * w + sx] : fill;
        const p01 = inX1 && inY0 ? S[sy * w + sx + 1] : fill;
        const p10 = inX0 && inY1 ? S[(sy + 1) * w + sx] : fill;
        const p11 = inX1 && inY1 ? S[(sy + 1) * w + sx + 1] : fill;
        const w00 = (32 - fy) * (32 - fx) * 32;
        const w01 = (32 - fy) * fx * 32;
        const w10 = fy * (32 - fx) * 32;
        const w11 = fy * fx * 32;
        v = (p00 * w00 + p01 * w01 + p10 * w10 + p11 * w11 + 16384) >> 15;
      }
      out.data[y * cw + x] = clip8(v);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Orientations (matcher.regions.DIHEDRAL; numpy views in matcher.workers._oriented)
// ---------------------------------------------------------------------------------------------

const SWAPS = new Set(["rot90", "rot270", "transpose", "transverse"]);

function orient(img, name) {
  const { w, h, data: S } = img;
  if (name === "id") return img;
  const swap = SWAPS.has(name);
  const ow = swap ? h : w;
  const oh = swap ? w : h;
  const out = gray(ow, oh);
  const D = out.data;
  for (let i = 0; i < oh; i++) {
    for (let j = 0; j < ow; j++) {
      let y;
      let x;
      switch (name) {
        case "mirror": y = i; x = w - 1 - j; break;
        case "rot180": y = h - 1 - i; x = w - 1 - j; break;
        case "flipv": y = h - 1 - i; x = j; break;
        case "rot90": y = j; x = w - 1 - i; break; // counter-clockwise (np.rot90(a, 1), PIL ROTATE_90)
        case "rot270": y = h - 1 - j; x = i; break;
        case "transpose": y = j; x = i; break;
        case "transverse": y = h - 1 - j; x = w - 1 - i; break;
        default: throw new Error(`unknown orientation ${name}`);
      }
      D[i * ow + j] = S[y * w + x];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// pHash (matcher/hashers/phash.py)
// ---------------------------------------------------------------------------------------------

const dctCache = new Map();

function dctMatrix(nOut, nIn) {
  const key = `${nOut}x${nIn}`;
  let m = dctCache.get(key);
  if (!m) {
    m = new Float64Array(nOut * nIn);
    for (let k = 0; k < nOut; k++) {
      for (let n = 0; n < nIn; n++) m[k * nIn + n] = 2.0 * Math.cos((Math.PI * k * (2 * n + 1)) / (2 * nIn));
    }
    dctCache.set(key, m);
  }
  return m;
}

/** pHash of an N x N grey array -> 16 hex digits (bits MSB first, as np.packbits). */
function phashHex(px, n, hashSize) {
  const d = dctMatrix(hashSize, n);
  // (d @ x) then (.. @ d.T), as numpy evaluates d @ x @ d.T
  const a = new Float64Array(hashSize * n);
  for (let k = 0; k < hashSize; k++) {
    for (let m = 0; m < n; m++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += d[k * n + i] * px[i * n + m];
      a[k * n + m] = s;
    }
  }
  const nbits = hashSize * hashSize;
  const low = new Float64Array(nbits);
  for (let k = 0; k < hashSize; k++) {
    for (let l = 0; l < hashSize; l++) {
      let s = 0;
      for (let m = 0; m < n; m++) s += a[k * n + m] * d[l * n + m];
      low[k * hashSize + l] = s;
    }
  }
  const sorted = Float64Array.from(low).sort();
  const med = nbits % 2 ? sorted[(nbits - 1) / 2] : (sorted[nbits / 2 - 1] + sorted[nbits / 2]) / 2;
  let hex = "";
  for (let byte = 0; byte < nbits / 8; byte++) {
    let v = 0;
    for (let b = 0; b < 8; b++) v = (v << 1) | (low[byte * 8 + b] > med ? 1 : 0);
    hex += v.toString(16).padStart(2, "0");
  }
  return hex;
}

/** Standard deviation of grey pixels (np.std: population). */
function pixelStd(px) {
  let s = 0;
  for (let i = 0; i < px.length; i++) s += px[i];
  const mean = s / px.length;
  let v = 0;
  for (let i = 0; i < px.length; i++) v += (px[i] - mean) ** 2;
  return Math.sqrt(v / px.length);
}

/** matcher.workers._area_codes for one box: round/clamp it, crop, INTER_AREA to size x size. */
function areaPixels(img, box, size) {
  const { w, h } = img;
  const l = Math.min(Math.max(0, pyRound(box[0])), w - 1);
  const t = Math.min(Math.max(0, pyRound(box[1])), h - 1);
  const r = Math.max(l + 1, Math.min(w, pyRound(box[2])));
  const b = Math.max(t + 1, Math.min(h, pyRound(box[3])));
  return cvResizeArea(crop(img, l, t, r, b), size, size).data;
}

// ---------------------------------------------------------------------------------------------
// Decoding: the working image (matcher/images.py load_image + matcher/workers.py query_one)
// ---------------------------------------------------------------------------------------------

const MAX_BYTES = 200 * 1024 * 1024; // matcher.images.Limits
const MAX_PIXELS = 100000000;

function sniff(head) {
  const s = (i, str) => [...str].every((c, k) => head[i + k] === c.charCodeAt(0));
  if (head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return "jpeg";
  if (head[0] === 0x89 && s(1, "PNG")) return "png";
  if (s(0, "GIF8")) return "gif";
  if (s(0, "RIFF") && s(8, "WEBP")) return "webp";
  if (s(0, "BM")) return "bmp";
  if (s(0, "II*\0") || s(0, "MM\0*")) return "tiff";
  if (s(4, "ftyp")) {
    const brand = String.fromCharCode(...head.slice(8, 12));
    if (/^(heic|heix|heim|heis|hevc|hevx|mif1|msf1)$/.test(brand)) return "heic";
    if (/^avi[fs]$/.test(brand)) return "avif";
  }
  return null;
}

/** A tag (SHORT or LONG) of the first IFD of the TIFF structure at b[t..end), or null. */
function tiffTag(b, t, end, tag) {
  if (t + 8 > end) return null;
  const le = b[t] === 0x49;
  const u16 = (p) => (le ? b[p] | (b[p + 1] << 8) : (b[p] << 8) | b[p + 1]);
  const u32 = (p) => (le ? (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16)) + b[p + 3] * 16777216
    : b[p] * 16777216 + ((b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]));
  const ifd = t + u32(t + 4);
  if (ifd + 2 > end) return null;
  const n = u16(ifd);
  for (let k = 0; k < n; k++) {
    const e = ifd + 2 + k * 12;
    if (e + 12 > end) return null;
    if (u16(e) === tag) return u16(e + 2) === 4 ? u32(e + 8) : u16(e + 8);
  }
  return null;
}

/** What Pillow reads from a JPEG's header segments: the EXIF orientation (1..8; 1 when absent or
 *  invalid, as matcher.images._orientation) and whether Pillow opens it as an MPO (a multi-picture
 *  file: several images in the MPF index and no Ultra HDR gain-map XMP; JpegImagePlugin.jpeg_factory),
 *  which load_image decodes in full, without draft. */
function jpegInfo(b) {
  let orientation = 1;
  let mpImages = 0;
  let ultraHdr = false;
  const latin1 = new TextDecoder("latin1");
  const ascii = (p, n) => latin1.decode(b.subarray(p, p + Math.max(0, n)));
  let i = 2;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) break;
    const marker = b[i + 1];
    if (marker === 0xff) {
      i += 1;
      continue;
    }
    if (marker === 0xd9 || marker === 0xda) break;
    const len = (b[i + 2] << 8) | b[i + 3];
    const end = Math.min(b.length, i + 2 + len);
    if (marker === 0xe1 && ascii(i + 4, 6) === "Exif\0\0") {
      const v = tiffTag(b, i + 10, end, 0x0112);
      if (v !== null) orientation = v >= 1 && v <= 8 ? v : 1;
    } else if (marker === 0xe1 && ascii(i + 4, len - 2).includes(' hdrgm:Version="')) {
      ultraHdr = true;
    } else if (marker === 0xe2 && ascii(i + 4, 4) === "MPF\0") {
      mpImages = tiffTag(b, i + 8, end, 0xb001) || 0;
    }
    i += 2 + len;
  }
  return { orientation, mpo: mpImages > 1 && !ultraHdr };
}

/** PIL JpegImageFile.draft(mode, (n, n)): the DCT scale (1, 2, 4 or 8) for a stored w x h JPEG. */
function draftScale(w, h, n) {
  const scale = Math.min(Math.floor(w / n), Math.floor(h / n));
  for (const s of [8, 4, 2, 1]) if (scale >= s) return s;
  return 1;
}

function describeFormat(fmt, name) {
  const what = name ? `"${name}"` : "this file";
  if (fmt === "heic") return `This browser cannot decode ${what} (HEIC/HEIF photo)`;
  if (fmt === "avif") return `This browser cannot decode ${what} (AVIF image)`;
  if (fmt === "tiff") return `This browser cannot decode ${what} (TIFF image)`;
  if (fmt === null) return `This browser cannot decode ${what}: not an image, or a format it cannot read`;
  return `This browser cannot decode ${what} (${fmt.toUpperCase()}: corrupt, truncated or unsupported)`;
}

function decodeError(message, code) {
  const e = new Error(message);
  e.code = code;
  return e;
}

/**
 * Decode a photo into the CLI's working image.
 * @param {Blob} blob the file
 * @param {object} recipe GET /api/v1/recipe
 * @returns {Promise<{width:number,height:number,w:number,h:number,data:Uint8Array,format:string|null}>}
 *   width/height: the original's pixels after EXIF orientation; w x h greyscale working image (row-major).
 * @throws Error with .code "undecodable" (the browser cannot decode it: e.g. HEIC in Chromium; the
 *   server's upload endpoint can) or "too_large".
 */
export async function decodeToWorking(blob, recipe) {
  const name = blob && blob.name ? blob.name : "";
  if (!blob || blob.size === 0) throw decodeError(`${name || "file"}: empty (0 bytes)`, "undecodable");
  if (blob.size > MAX_BYTES) {
    throw decodeError(`${blob.size.toLocaleString()} bytes, more than the ${MAX_BYTES.toLocaleString()}-byte limit`, "too_large");
  }
  const head = new Uint8Array(await blob.slice(0, 262144).arrayBuffer());
  const fmt = sniff(head);
  let bmp;
  try {
    bmp = await createImageBitmap(blob, {
      imageOrientation: "from-image",
      colorSpaceConversion: "none",
      premultiplyAlpha: "default",
    });
  } catch (e) {
    throw decodeError(describeFormat(fmt, name), "undecodable");
  }
  try {
    const W = bmp.width;
    const H = bmp.height;
    if (!W || !H) throw decodeError(describeFormat(fmt, name), "undecodable");
    if (W * H > MAX_PIXELS) {
      throw decodeError(`${W}x${H} = ${Math.round((W * H) / 1e6)} MP, more than the ${MAX_PIXELS / 1e6} MP limit`, "too_large");
    }
    let img;
    const jpeg = fmt === "jpeg" ? jpegInfo(head) : null;
    if (jpeg && !jpeg.mpo) {
      // draft("L", (QUERY_DRAFT, QUERY_DRAFT)): libjpeg decodes at 1/s scale, each output pixel the
      // average of an s x s block of the stored image (whose grid starts at the stored top-left)
      const s = draftScale(W, H, recipe.query_draft);
      const o = jpeg.orientation;
      img = readGray(bmp, s, [2, 3, 6, 7].includes(o), [3, 4, 7, 8].includes(o));
    } else {
      img = readGray(bmp, 1, false, false);
    }
    const side = recipe.query_side;
    img = pilThumbnail(img, side, side);
    return { width: W, height: H, w: img.w, h: img.h, data: img.data, format: fmt };
  } finally {
    bmp.close();
  }
}

/** The bitmap as Pillow's "L" (composited onto white, as load_image does with alpha), averaged over
 *  s x s blocks (s = 1: as is); revX/revY: the stored block grid starts at the right/bottom. */
function readGray(bmp, s, revX, revY) {
  const W = bmp.width;
  const H = bmp.height;
  const ow = Math.ceil(W / s);
  const oh = Math.ceil(H / s);
  const padX = revX ? (s - (W % s)) % s : 0;
  const padY = revY ? (s - (H % s)) % s : 0;
  const strip = Math.max(1, Math.min(H, Math.floor(8388608 / W)));
  const canvas = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(W, strip) : Object.assign(document.createElement("canvas"), { width: W, height: strip });
  const ctx = canvas.getContext("2d", { willReadFrequently: true, alpha: false });
  ctx.imageSmoothingEnabled = false;
  const out = gray(ow, oh);
  const sums = s > 1 ? new Float64Array(ow * oh) : null;
  const counts = s > 1 ? new Uint32Array(ow * oh) : null;
  const colBlock = new Int32Array(W);
  for (let x = 0; x < W; x++) colBlock[x] = Math.floor((x + padX) / s);
  for (let y0 = 0; y0 < H; y0 += strip) {
    const rows = Math.min(strip, H - y0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, W, rows);
    ctx.drawImage(bmp, 0, y0, W, rows, 0, 0, W, rows);
    const px = ctx.getImageData(0, 0, W, rows).data;
    for (let r = 0; r < rows; r++) {
      const y = y0 + r;
      let p = r * W * 4;
      if (!sums) {
        const o = y * W;
        for (let x = 0; x < W; x++, p += 4) out.data[o + x] = (px[p] * 19595 + px[p + 1] * 38470 + px[p + 2] * 7471 + 0x8000) >> 16;
      } else {
        const o = Math.floor((y + padY) / s) * ow;
        for (let x = 0; x < W; x++, p += 4) {
          const k = o + colBlock[x];
          sums[k] += (px[p] * 19595 + px[p + 1] * 38470 + px[p + 2] * 7471 + 0x8000) >> 16;
          counts[k]++;
        }
      }
    }
  }
  if (sums) {
    for (let k = 0; k < sums.length; k++) out.data[k] = Math.floor((2 * sums[k] + counts[k]) / (2 * counts[k]));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Variants (matcher.recipe.expand + face crops of matcher.regions.query_variants)
// ---------------------------------------------------------------------------------------------

/** Size of the Sources.small copy (PIL BOX resize to at most small_side px). */
function smallSize(recipe, w, h) {
  const f = Math.min(1.0, recipe.small_side / Math.max(w, h));
  return f < 1.0 ? [Math.max(1, pyRound(w * f)), Math.max(1, pyRound(h * f))] : [w, h];
}

/**
 * The CLI's variants for an upright working image of w x h and the faces found in it.
 * @returns {{name:string, source:string, box:number[], orient:string, angle?:number, fill?:string, grown?:boolean}[]}
 *   source is the key of matcher.regions.Sources ("id", "mirror@+2e/white", ...); box is in pixels of that source.
 */
export function expandVariants(recipe, w, h, faces = []) {
  const [sw, sh] = smallSize(recipe, w, h);
  const out = [];
  for (const v of recipe.variants) {
    const s = v.source;
    const o = s.orient;
    if (s.angle === undefined || s.angle === null) {
      const [ow, oh] = SWAPS.has(o) ? [h, w] : [w, h];
      const [l, t, r, b] = v.box;
      out.push({ name: v.name, source: o, orient: o, box: [l * ow, t * oh, r * ow, b * oh] });
      continue;
    }
    const angle = Number(s.angle);
    const white = s.fill === "white";
    const key = `${o}@${fmtSignedG(angle)}${s.grown ? "e" : ""}${white ? "/white" : ""}`;
    const a = Math.abs(angle) * (Math.PI / 180);
    // a quarter-turned source would swap the small copy's sides (not in recipe version 1)
    const [bw, bh] = SWAPS.has(o) ? [sh, sw] : [sw, sh];
    let cw = bw;
    let ch = bh;
    if (s.grown) {
      cw = Math.ceil(sw * Math.cos(a) + sh * Math.sin(a));
      ch = Math.ceil(sw * Math.sin(a) + sh * Math.cos(a));
      if (SWAPS.has(o)) [cw, ch] = [ch, cw];
    }
    let box;
    if (v.box === "inner") {
      const k = 1 / (Math.cos(a) + Math.sin(a) * Math.max(bw / bh, bh / bw));
      box = [(bw - bw * k) / 2, (bh - bh * k) / 2, (bw + bw * k) / 2, (bh + bh * k) / 2];
    } else {
      const [l, t, r, b] = v.box;
      box = [l * cw, t * ch, r * cw, b * ch];
    }
    out.push({ name: v.name, source: key, orient: o, angle, fill: white ? "white" : "black", grown: !!s.grown, canvas: [cw, ch], box });
  }
  const fc = recipe.faces || {};
  if (fc.enabled !== false && faces && faces.length) {
    const shifts = fc.shifts || [[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]];
    faces.forEach(([x, y, fw, fh], i) => {
      for (const k of fc.scales) {
        const s = (Math.max(fw, fh) * k) / 2;
        for (const [sx, sy] of shifts) {
          const cx = x + fw / 2 + sx * fc.shift * fw;
          const cy = y + fh / 2 + sy * fc.shift * fh;
          const box = [Math.max(0.0, cx - s), Math.max(0.0, cy - s), Math.min(w, cx + s), Math.min(h, cy + s)];
          const suffix = sx === 0 && sy === 0 ? "" : `@${sx >= 0 ? "+" : ""}${sx}${sy >= 0 ? "+" : ""}${sy}`;
          out.push({ name: `face${i}/x${fmtG(k)}${suffix}`, source: "id", orient: "id", face: true, box });
        }
      }
    });
  }
  return out;
}

/** matcher.regions.Sources: oriented / rotated versions of the working image, made on first use. */
class Sources {
  constructor(work, recipe) {
    this.img = gray(work.w, work.h, work.data);
    const [sw, sh] = smallSize(recipe, work.w, work.h);
    this.small = sw === work.w && sh === work.h ? this.img : pilResize(this.img, sw, sh, "box");
    this.cache = new Map();
  }

  get(v) {
    let out = this.cache.get(v.source);
    if (out) return out;
    if (v.angle === undefined) {
      out = orient(this.img, v.orient);
    } else {
      const base = orient(this.small, v.orient);
      out = cvRotate(base, v.angle, v.canvas[0], v.canvas[1], v.fill === "white" ? 255 : 0);
    }
    this.cache.set(v.source, out);
    return out;
  }
}

function checkRecipe(recipe) {
  if (!recipe || recipe.version !== 1) throw new Error(`unsupported recipe version ${recipe && recipe.version}`);
  if (recipe.hasher.name !== "phash") throw new Error(`unsupported hasher ${recipe.hasher.name}`);
}

// ---------------------------------------------------------------------------------------------
// Hashing (matcher.workers.query_one)
// ---------------------------------------------------------------------------------------------

/**
 * Hash a working image as the CLI's query side does: one pHash per variant, the whole photo first.
 * @param {{w:number,h:number,data:Uint8Array}} work from decodeToWorking
 * @param {object} recipe GET /api/v1/recipe
 * @param {number[][]} faces [[x, y, w, h], ...] in working-image pixels
 * @returns {{kind:string, hash:string}[]} first "id/full"; variants with too little detail left out
 * @throws Error with .code "uniform" when the whole photo is nearly uniform
 */
export function hashVariants(work, recipe, faces = []) {
  return hashDetailed(work, recipe, faces).map(({ kind, hash }) => ({ kind, hash }));
}

function hashDetailed(work, recipe, faces) {
  checkRecipe(recipe);
  const n = recipe.hasher.img_size;
  const hs = recipe.hasher.hash_size;
  const minDetail = recipe.min_detail;
  const W = work.w;
  const H = work.h;
  const img = gray(W, H, work.data);
  const variants = expandVariants(recipe, W, H, recipe.regions === false ? [] : faces);
  const f = Math.min(1.0, recipe.hash_side / Math.max(W, H));
  const medium = f === 1.0 ? img : cvResizeArea(img, Math.max(1, pyRound(W * f)), Math.max(1, pyRound(H * f)));
  const fx = medium.w / W;
  const fy = medium.h / H;
  const sources = new Sources(work, recipe);
  const oriented = new Map();
  const out = [];
  variants.forEach((v, i) => {
    let px;
    if (i === 0) {
      // the whole photo: Lanczos from the working image, as the dataset side hashes an image
      px = pilResize(img, n, n, "lanczos", v.box).data;
    } else if (v.angle === undefined && !v.face) {
      let src = oriented.get(v.orient);
      if (!src) oriented.set(v.orient, (src = orient(medium, v.orient)));
      const [sx, sy] = SWAPS.has(v.orient) ? [fy, fx] : [fx, fy];
      const [l, t, r, b] = v.box;
      px = areaPixels(src, [l * sx, t * sy, r * sx, b * sy], n);
    } else {
      px = areaPixels(sources.get(v), v.box, n);
    }
    const detail = pixelStd(px);
    if (i === 0 && !(detail >= minDetail)) {
      const e = new Error(`nearly uniform image (grey-level spread ${detail.toFixed(1)} < ${minDetail}): `
        + "too little detail to match by content");
      e.code = "uniform";
      throw e;
    }
    if (detail >= minDetail) out.push({ kind: v.name, hash: phashHex(px, n, hs), detail, variant: v });
  });
  return out;
}

/**
 * The opt-out registry's code pairs of a photo (matcher.optout.photo_codes): each variant's 64-bit hash
 * (as hashVariants) and its 256-bit confirmation code: the same region, INTER_AREA to confirm.side
 * (64) pixels, pHash with confirm.hash_size (16). Orientation x crop variants are cut from a copy of
 * at most confirm.source_side (256) pixels; rotated and face variants from their own sources.
 * @param {{side:number, hash_size:number, source_side:number}} confirm from GET /api/v1/optout/info
 * @returns {{kind:string, hash:string, confirm:string}[]}
 */
export function codePairs(work, recipe, confirm, faces = []) {
  const hashed = hashDetailed(work, recipe, faces);
  const W = work.w;
  const H = work.h;
  const img = gray(W, H, work.data);
  const f = Math.min(1.0, confirm.source_side / Math.max(W, H));
  const small = f === 1.0 ? img : cvResizeArea(img, Math.max(1, pyRound(W * f)), Math.max(1, pyRound(H * f)));
  const fx = small.w / W;
  const fy = small.h / H;
  const sources = new Sources(work, recipe);
  const oriented = new Map();
  return hashed.map(({ kind, hash, variant: v }) => {
    let px;
    if (v.angle === undefined && !v.face) {
      let src = oriented.get(v.orient);
      if (!src) oriented.set(v.orient, (src = orient(small, v.orient)));
      const [sx, sy] = SWAPS.has(v.orient) ? [fy, fx] : [fx, fy];
      const [l, t, r, b] = v.box;
      px = areaPixels(src, [l * sx, t * sy, r * sx, b * sy], confirm.side);
    } else {
      px = areaPixels(sources.get(v), v.box, confirm.side);
    }
    return { kind, hash, confirm: phashHex(px, confirm.side, confirm.hash_size) };
  });
}

/**
 * Decode, find faces (optional), hash.
 * @param {Blob} blob
 * @param {object} recipe
 * @param {{detectFaces?: (work, facesRecipe) => number[][]}} options
 * @returns {Promise<{width:number,height:number,work:{w:number,h:number,data:Uint8Array},faces:number[][],hashes:{kind:string,hash:string}[]}>}
 */
export async function hashPhoto(blob, recipe, { detectFaces = null } = {}) {
  const dec = await decodeToWorking(blob, recipe);
  const work = { w: dec.w, h: dec.h, data: dec.data };
  let faces = [];
  if (detectFaces && recipe.regions !== false && recipe.faces && recipe.faces.enabled) {
    faces = (await detectFaces(work, recipe.faces)) || [];
  }
  const hashes = hashVariants(work, recipe, faces);
  return { width: dec.width, height: dec.height, work, faces, hashes };
}

// ---------------------------------------------------------------------------------------------
// Verification (matcher/verify.py, matcher.workers.verify_batch)
// ---------------------------------------------------------------------------------------------

function normalise(px) {
  const n = px.length;
  let s = 0;
  for (let i = 0; i < n; i++) s += px[i];
  const mean = s / n;
  const x = new Float64Array(n);
  let q = 0;
  for (let i = 0; i < n; i++) {
    x[i] = px[i] - mean;
    q += x[i] * x[i];
  }
  const norm = Math.sqrt(q);
  if (norm > 1e-6) for (let i = 0; i < n; i++) x[i] /= norm;
  return x;
}

function median(a) {
  const s = Float64Array.from(a).sort();
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** matcher.verify.cell_score of two side x side grey arrays. */
function cellScore(a, b, side, cells, minCells, ring) {
  const n = Math.floor(side / cells);
  const r = [];
  for (let ci = 0; ci < cells; ci++) {
    for (let cj = 0; cj < cells; cj++) {
      if (ring && (ci < ring || ci >= cells - ring || cj < ring || cj >= cells - ring)) continue;
      let sa = 0;
      let sb = 0;
      for (let y = 0; y < n; y++) {
        for (let x = 0; x < n; x++) {
          sa += a[(ci * n + y) * side + cj * n + x];
          sb += b[(ci * n + y) * side + cj * n + x];
        }
      }
      const m = n * n;
      const ma = sa / m;
      const mb = sb / m;
      let xx = 0;
      let yy = 0;
      let xy = 0;
      for (let y = 0; y < n; y++) {
        for (let x = 0; x < n; x++) {
          const p = a[(ci * n + y) * side + cj * n + x] - ma;
          const q = b[(ci * n + y) * side + cj * n + x] - mb;
          xx += p * p;
          yy += q * q;
          xy += p * q;
        }
      }
      if (Math.sqrt(xx / m) > 2 && Math.sqrt(yy / m) > 2) r.push(xy / (Math.sqrt(xx) * Math.sqrt(yy)));
    }
  }
  return r.length < minCells ? 0.0 : median(r);
}

/** np.pad(a, pad, mode="edge") */
function padEdge(img, pad) {
  const W = img.w + 2 * pad;
  const H = img.h + 2 * pad;
  const out = gray(W, H);
  for (let y = 0; y < H; y++) {
    const sy = Math.min(img.h - 1, Math.max(0, y - pad));
    for (let x = 0; x < W; x++) {
      const sx = Math.min(img.w - 1, Math.max(0, x - pad));
      out.data[y * W + x] = img.data[sy * img.w + sx];
    }
  }
  return out;
}

/** matcher.verify.align: [score, aligned box in src pixels]. */
function align(src, box, target, filledCorners, vr) {
  const T = vr.thumb;
  const tgt = normalise(target);
  let g = src;
  let f = 128.0 / Math.max(box[2] - box[0], box[3] - box[1], 1.0);
  if (f < 0.8) {
    g = pilResize(g, Math.max(1, pyRound(g.w * f)), Math.max(1, pyRound(g.h * f)), "box");
    box = box.map((v) => v * f);
  } else {
    f = 1.0;
  }
  const pad = Math.max(1, pyRound(0.15 * Math.max(g.w, g.h)));
  g = padEdge(g, pad);
  box = box.map((v) => v + pad);
  const W = g.w;
  const H = g.h;
  const thumb = (b) => pilResize(g, T, T, "bilinear", b, 2.0).data;
  const score = (b) => {
    const x = normalise(thumb(b));
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i] * tgt[i];
    return s;
  };
  let cur = [Math.max(0.0, box[0]), Math.max(0.0, box[1]), Math.min(W, box[2]), Math.min(H, box[3])];
  let best = score(cur);
  const w = cur[2] - cur[0];
  const h = cur[3] - cur[1];
  let step = 0.05;
  while (step >= 0.003) {
    let improved = false;
    for (let edge = 0; edge < 4; edge++) {
      const unit = edge === 0 || edge === 2 ? w : h;
      for (const sign of [-1, 1]) {
        let nb = cur.slice();
        nb[edge] += sign * step * unit;
        if (nb[2] - nb[0] < 8 || nb[3] - nb[1] < 8) continue;
        nb = [Math.max(0.0, nb[0]), Math.max(0.0, nb[1]), Math.min(W, nb[2]), Math.min(H, nb[3])];
        const s = score(nb);
        if (s > best + 1e-5) {
          best = s;
          cur = nb;
          improved = true;
        }
      }
    }
    if (!improved) step /= 2;
  }
  const sc = cellScore(thumb(cur), target, T, vr.cells, vr.min_cells, filledCorners ? 1 : 0);
  return [sc, cur.map((v) => (v - pad) / f)];
}

/** A base64 PNG (64x64 grey) -> its grey pixels. */
async function decodeThumb(b64, side) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const bmp = await createImageBitmap(new Blob([bytes], { type: "image/png" }), {
    colorSpaceConversion: "none",
    premultiplyAlpha: "none",
  });
  try {
    if (bmp.width !== side || bmp.height !== side) throw new Error(`thumbnail is ${bmp.width}x${bmp.height}, not ${side}x${side}`);
    const canvas = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(side, side) : Object.assign(document.createElement("canvas"), { width: side, height: side });
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bmp, 0, 0);
    const px = ctx.getImageData(0, 0, side, side).data;
    const out = new Uint8Array(side * side);
    for (let i = 0; i < out.length; i++) out[i] = (px[i * 4] * 19595 + px[i * 4 + 1] * 38470 + px[i * 4 + 2] * 7471 + 0x8000) >> 16;
    return out;
  } finally {
    bmp.close();
  }
}

/**
 * Verify the candidates of one photo (the `candidates` of one result of POST /api/v1/search), as
 * matcher.workers.verify_batch does (without the full-detail check, which needs the dataset file).
 * @param {{w:number,h:number,data:Uint8Array}} work the working image hashPhoto returned
 * @param {number[][]} faces the faces it was hashed with
 * @param {object[]} candidates [{item, tries: [{distance, variant, entry}], thumbs: {entry: base64 | null}}]
 * @param {object} recipe
 * @param {{keepRejected?: boolean}} options keepRejected: also return candidates that failed (verified: false)
 * @returns {Promise<{item:object, distance:number, score:number|null, variant:string, entry:string,
 *   box:number[]|null, verified:boolean}[]>} sorted as the CLI sorts matches: (distance, -score, item id)
 */
export async function verifyCandidates(work, faces, candidates, recipe, { keepRejected = false } = {}) {
  checkRecipe(recipe);
  const vr = recipe.verify;
  const minScore = vr.min_score;
  let byName = null;
  let sources = null;
  const thumbCache = new Map();
  const out = [];
  for (const cand of candidates || []) {
    let best = null;
    for (const t of cand.tries) {
      const b64 = cand.thumbs ? cand.thumbs[t.entry] : null;
      if (b64 === null || b64 === undefined) {
        best = { score: null, distance: t.distance, variant: t.variant, entry: t.entry, how: t.how, box: null };
        break;
      }
      if (!byName) {
        byName = new Map(expandVariants(recipe, work.w, work.h, recipe.regions === false ? [] : faces).map((v) => [v.name, v]));
        sources = new Sources(work, recipe);
      }
      const v = byName.get(t.variant);
      if (!v) throw new Error(`unknown variant ${t.variant}`);
      const key = `${cand.item && cand.item.id}/${t.entry}`;
      let target = thumbCache.get(key);
      if (!target) thumbCache.set(key, (target = await decodeThumb(b64, vr.thumb)));
      const [score, box] = align(sources.get(v), v.box, target, /-(black|white)$/.test(v.name), vr);
      if (best === null || score > best.score) best = { score, distance: t.distance, variant: t.variant, entry: t.entry, how: t.how, box };
      if (score >= minScore) break;
    }
    if (!best) continue;
    const verified = best.score === null || best.score >= minScore;
    if (!verified && !keepRejected) continue;
    out.push({ item: cand.item, ...best, verified });
  }
  const r4 = (s) => (s === null ? 0 : Math.round(s * 10000) / 10000);
  out.sort((a, b) => a.distance - b.distance || r4(b.score) - r4(a.score) || a.item.id - b.item.id);
  return out;
}

/** Internals, for tests and benchmarks (tests/test_web_hasher.py). */
export const _internal = {
  pyRound, pilResize, pilReduce, pilThumbnail, thumbnailSize, cvResizeArea, cvRotate, orient, phashHex,
  pixelStd, areaPixels, draftScale, jpegInfo, expandVariants, hashDetailed, align, cellScore,
  decodeThumb, Sources, smallSize,
};
