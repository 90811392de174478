// Runs a TF.js graph model (model.json + shard .bin files) on one raw tensor.
//
//   node run_tfjs.mjs MODEL_JSON INPUT_F32_BIN OUTPUT_F32_BIN
//
// INPUT_F32_BIN holds a little-endian float32 tensor whose shape is the
// model's signature input shape (for the YOLOv5 COCO model: 1x640x640x3 NHWC).
// The model's single output is written to OUTPUT_F32_BIN as little-endian
// float32, and its shape is printed on stdout as JSON.
//
// Backend: TFJS_BACKEND=wasm (default, uses the .wasm shipped inside the
// @tensorflow/tfjs-backend-wasm package) or TFJS_BACKEND=cpu (pure JS).

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';

const require = createRequire(import.meta.url);

function usage() {
  console.error('usage: node run_tfjs.mjs MODEL_JSON INPUT_F32_BIN OUTPUT_F32_BIN');
  process.exit(2);
}

// Build an in-memory IOHandler from a model.json on disk: read the JSON, then
// concatenate every shard listed in weightsManifest, in manifest order.
function diskHandler(modelJsonPath) {
  const dir = path.dirname(modelJsonPath);
  const json = JSON.parse(fs.readFileSync(modelJsonPath, 'utf8'));
  return {
    load: async () => {
      const weightSpecs = [];
      const buffers = [];
      for (const group of json.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const p of group.paths) {
          buffers.push(fs.readFileSync(path.join(dir, p)));
        }
      }
      const all = Buffer.concat(buffers);
      // Copy into a standalone ArrayBuffer (a Buffer may be a view of a pool).
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
      return {
        modelTopology: json.modelTopology,
        weightSpecs,
        weightData,
        format: json.format,
        generatedBy: json.generatedBy,
        convertedBy: json.convertedBy,
        signature: json.signature,
        userDefinedMetadata: json.userDefinedMetadata,
      };
    },
  };
}

async function setBackend(name) {
  if (name === 'wasm') {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const distDir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    wasm.setWasmPaths(distDir + path.sep);
  }
  const ok = await tf.setBackend(name);
  if (!ok) throw new Error(`could not initialise tfjs backend ${name}`);
  await tf.ready();
}

function inputShape(json) {
  const sig = json.signature && json.signature.inputs;
  if (!sig) return null;
  const first = Object.values(sig)[0];
  return first.tensorShape.dim.map((d) => Number(d.size));
}

async function main() {
  const [modelJson, inPath, outPath] = process.argv.slice(2);
  if (!modelJson || !inPath || !outPath) usage();

  const backend = process.env.TFJS_BACKEND || 'wasm';
  await setBackend(backend);

  const json = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  const shape = inputShape(json) || [1, 640, 640, 3];
  const count = shape.reduce((a, b) => a * b, 1);

  const raw = fs.readFileSync(inPath);
  if (raw.byteLength !== count * 4) {
    throw new Error(`input has ${raw.byteLength} bytes, expected ${count * 4} for shape ${JSON.stringify(shape)}`);
  }
  // Decode explicitly as little-endian regardless of host order.
  const data = new Float32Array(count);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  for (let i = 0; i < count; i++) data[i] = view.getFloat32(i * 4, true);

  const t0 = Date.now();
  const model = await tf.loadGraphModel(diskHandler(modelJson));
  const t1 = Date.now();

  const input = tf.tensor(data, shape, 'float32');
  let output = model.execute(input);
  if (Array.isArray(output)) {
    if (output.length !== 1) throw new Error(`expected one output, got ${output.length}`);
    output = output[0];
  }
  const values = await output.data();
  const t2 = Date.now();

  const outBuf = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) outBuf.writeFloatLE(values[i], i * 4);
  fs.writeFileSync(outPath, outBuf);

  process.stdout.write(JSON.stringify({
    backend: tf.getBackend(),
    tfjs: tf.version.tfjs,
    shape: output.shape,
    load_ms: t1 - t0,
    infer_ms: t2 - t1,
  }) + '\n');

  tf.dispose([input, output]);
  model.dispose();
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
