// Builds the viewer bundle into src/imaging_hub/viewer_static/viewer/ (or the directory given as
// the first argument). Deterministic: the same lock file gives byte-identical files (no source
// maps, no timestamps, files and licence texts in sorted order). Run through
// scripts/viewer-bundle.sh (npm ci first), never by hand against a hand-edited node_modules.
import { build } from "esbuild";
import { createRequire } from "node:module";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || join(here, "..", "src", "imaging_hub", "viewer_static", "viewer"));
const require = createRequire(import.meta.url);
const loaderDir = dirname(require.resolve("@cornerstonejs/dicom-image-loader/package.json"));

// The codecs the hub's syntaxes need: JPEG-LS (CharLS), JPEG 2000 (OpenJPEG), JPEG baseline
// (libjpeg-turbo); JPEG lossless and RLE are plain JavaScript. HTJ2K and JPEG XL are left out
// (their decoders throw "not supported"), which keeps several MB of WASM out of the repository.
const WASM = [
  ["@cornerstonejs/codec-charls/decodewasm", "charlswasm_decode.wasm"],
  ["@cornerstonejs/codec-openjpeg/decodewasm", "openjpegwasm_decode.wasm"],
  ["@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasm", "libjpegturbowasm_decode.wasm"],
];
const UNSUPPORTED = { "decodeHTJ2K.js": "HTJ2K", "decodeJPEGXL.js": "JPEG XL" };

const leaveOut = {
  name: "leave-out-codecs",
  setup(b) {
    b.onLoad({ filter: /[\\/]shared[\\/]decoders[\\/]decode(HTJ2K|JPEGXL)\.js$/ }, (args) => {
      const name = UNSUPPORTED[args.path.split(/[\\/]/).pop()];
      return {
        contents:
          `export function initialize() { return Promise.resolve(); }\n` +
          `export default async function decode() { throw new Error(${JSON.stringify(name + " is not supported by this viewer")}); }\n`,
        loader: "js",
      };
    });
  },
};

// Node-only modules that browser code paths never reach (Emscripten glue behind
// ENVIRONMENT_IS_NODE; vtk.js's XML reader/writer, which the viewer never uses): empty stubs.
const EMPTY = ["events", "fs", "path", "crypto", "module", "url", "worker_threads", "xmlbuilder2"];
const emptyModules = {
  name: "empty-node-modules",
  setup(b) {
    const filter = new RegExp(`^(node:)?(${EMPTY.join("|")})$`);
    b.onResolve({ filter }, (args) => ({ path: args.path, namespace: "empty" }));
    b.onLoad({ filter: /.*/, namespace: "empty" }, () => ({ contents: "module.exports = {};", loader: "js" }));
  },
};

// The app's CSP forbids style attributes (style-src-attr); CSSOM assignments are allowed. Source
// patches, each required to apply (a new Cornerstone version that changes the code fails the
// build instead of silently bringing the violation back).
const PATCHES = [
  {
    file: /[\\/]@cornerstonejs[\\/]tools[\\/]dist[\\/]esm[\\/]drawingSvg[\\/]drawTextBox\.js$/,
    from: "textElement.setAttribute('style', combinedStyle);",
    to: "textElement.style.cssText = combinedStyle;",
  },
  {
    // loadAndCacheImage drops the promise of putImageLoadObject, which rethrows a failed load:
    // every frame that fails to decode became an unhandled rejection (a page error), although
    // the failure already reaches the caller (the same load's promise) and the IMAGE_LOAD_*
    // events, from which the viewport shows its "cannot be decoded" message.
    file: /[\\/]@cornerstonejs[\\/]core[\\/]dist[\\/]esm[\\/]loaders[\\/]imageLoader\.js$/,
    from: "cache.putImageLoadObject(imageId, imageLoadObject);",
    to: "cache.putImageLoadObject(imageId, imageLoadObject).catch(() => {});",
  },
  {
    // The WADO-RS multipart answer is searched for its closing boundary byte by byte in
    // JavaScript on the main thread (about 40 ms for the 15 MB frame of a 3000x2500 12-bit DX);
    // the same search jumping between candidate first bytes with the native TypedArray indexOf.
    file: /[\\/]@cornerstonejs[\\/]dicom-image-loader[\\/]dist[\\/]esm[\\/]imageLoader[\\/]wadors[\\/]findIndexOfString\.js$/,
    from: "for (let i = offset; i < data.length; i++) {\n        if (token[0] === data[i]) {",
    to: "for (let i = data.indexOf(token[0], offset); i !== -1; i = data.indexOf(token[0], i + 1)) {\n        {",
  },
  {
    // CPU rendering path (used where WebGL is a software rasteriser): a new image of the stack
    // keeps the window shown (its fallback viewport's VOI), but the viewport's voiRange was
    // reset to the new image's own window, so getProperties() (the overlay, the window/level
    // tool's starting point) disagreed with the picture after a scroll. voiRange follows the
    // window kept, as on the GPU path.
    file: /[\\/]@cornerstonejs[\\/]core[\\/]dist[\\/]esm[\\/]RenderingEngine[\\/]StackViewport\.js$/,
    from: "        this.stackInvalidated = false;\n        this.cpuRenderingInvalidated = true;\n",
    to:
      "        this.stackInvalidated = false;\n" +
      "        { const kept = this._cpuFallbackEnabledElement.viewport.voi; if (kept && kept.windowWidth > 0) this.voiRange = getVOIRangeFromWindowLevel(kept.windowWidth, kept.windowCenter, kept.voiLUTFunction); }\n" +
      "        this.cpuRenderingInvalidated = true;\n",
  },
  {
    // CPU rendering path: the calibrated pixel spacing (here: Imager Pixel Spacing of a
    // projection image, measured at the detector) was applied on the GPU path only, so lengths
    // came out in pixels labelled mm. Applied on both paths.
    file: /[\\/]@cornerstonejs[\\/]core[\\/]dist[\\/]esm[\\/]RenderingEngine[\\/]StackViewport\.js$/,
    from: "        if (!this.useCPURendering) {\n            imagePlaneModule = this.calibrateIfNecessary(imageId, imagePlaneModule);\n        }\n",
    to: "        imagePlaneModule = this.calibrateIfNecessary(imageId, imagePlaneModule);\n",
  },
];
const cspPatches = {
  name: "csp-patches",
  setup(b) {
    // One onLoad per file (esbuild uses the first matching one), applying each of its patches.
    const files = [...new Set(PATCHES.map((p) => p.file.source))];
    for (const source of files) {
      const mine = PATCHES.filter((p) => p.file.source === source);
      b.onLoad({ filter: mine[0].file }, (args) => {
        let text = readFileSync(args.path, "utf8");
        for (const patch of mine) {
          if (!text.includes(patch.from)) throw new Error(`patch does not apply to ${args.path}: ${patch.from}`);
          text = text.split(patch.from).join(patch.to);
        }
        return { contents: text, loader: "js" };
      });
    }
  },
};

const common = {
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022", "chrome110", "firefox115", "safari16"],
  minify: true,
  legalComments: "none",
  sourcemap: false,
  metafile: true,
  logLevel: "warning",
  plugins: [leaveOut, emptyModules, cspPatches],
  define: { "process.env.NODE_ENV": '"production"' },
};

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const results = await Promise.all([
  build({ ...common, entryPoints: { viewer: join(here, "src", "index.js") }, outdir: out }),
  build({
    ...common,
    entryPoints: { decodeImageFrameWorker: join(loaderDir, "dist", "esm", "decodeImageFrameWorker.js") },
    outdir: out,
  }),
]);

for (const [spec, name] of WASM) copyFileSync(require.resolve(spec), join(out, name));

// Licence texts of every package that ended up in the bundle, sorted, in one file.
const packages = new Set();
for (const r of results) {
  for (const input of Object.keys(r.metafile.inputs)) {
    const parts = input.split(/[\\/]/);
    const i = parts.lastIndexOf("node_modules");
    if (i < 0) continue;
    packages.add(parts[i + 1].startsWith("@") ? `${parts[i + 1]}/${parts[i + 2]}` : parts[i + 1]);
  }
}
for (const [spec] of WASM) packages.add(spec.split("/").slice(0, 2).join("/"));
const sections = [];
for (const name of [...packages].sort()) {
  const dir = join(here, "node_modules", ...name.split("/"));
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const files = readdirSync(dir).filter((f) => /^(licen[cs]e|copying|notice)/i.test(f)).sort();
  const texts = files.map((f) => readFileSync(join(dir, f), "utf8").trim());
  sections.push(`${name}@${pkg.version} (${pkg.license || "see text"})\n\n${texts.join("\n\n") || "(no licence file in the package)"}`);
}
writeFileSync(
  join(out, "THIRD_PARTY_LICENSES.txt"),
  "Third-party software in this directory (built from viewer/ by scripts/viewer-bundle.sh).\n\n" +
    sections.join("\n\n" + "-".repeat(72) + "\n\n") + "\n",
);
for (const f of readdirSync(out).sort()) {
  const size = readFileSync(join(out, f)).length;
  console.log(`${String(size).padStart(9)}  ${relative(process.cwd(), join(out, f))}`);
}
