// Validates AsyncAPI documents with the reference parser: `node validate.mjs FILE...`.
// Prints every diagnostic; exits 1 when a document has an error (warnings alone pass).
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const parser = new Parser();
let failed = false;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(await readFile(file, "utf8"), { source: file });
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  for (const d of diagnostics) {
    console.log(`${file}: ${DiagnosticSeverity[d.severity]} ${d.code} at /${d.path.join("/")}: ${d.message}`);
  }
  if (!document || errors.length > 0) {
    failed = true;
    console.log(`${file}: invalid AsyncAPI document`);
  } else {
    console.log(`${file}: valid AsyncAPI ${document.version()}`);
  }
}
process.exit(failed ? 1 : 0);
