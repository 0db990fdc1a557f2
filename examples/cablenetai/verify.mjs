// CablenetAI's verification function, from its webhook document
// (seeds/002_32c44f04dfb622e6.txt), translated from TypeScript to JavaScript by removing
// the type annotations only (and exporting it). Its logic is unchanged.
import { createHmac, timingSafeEqual } from "crypto";

export function verify(rawBody, header, secret) {
  const expected = createHmac("sha256", secret).update(rawBody).digest("hex");
  return header.length === expected.length &&
    timingSafeEqual(Buffer.from(header), Buffer.from(expected));
}
