/**
 * Reads a browser upload's multipart/form-data body (@fastify/busboy) as S3
 * does: the fields before the `file` part, then the file itself as a stream
 * (never buffered); fields after the file are ignored. The body goes through
 * the body verifier first (Content-Length, Content-MD5, a signed payload
 * hash when given), so a body cut short is never taken as a whole form.
 *
 * The file stream ends cleanly only when its closing boundary was seen; if
 * the form or the body turns out bad, it errors instead. `done` resolves only
 * once the whole body was read, parsed and verified: commit after it.
 * Limits: 20 KiB of fields before the file (S3's), 100 fields, one file.
 */
import { Busboy } from '@fastify/busboy';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32c } from '../../../src/client/checksum.js';
import { createBodyVerifier, isS3AuthError } from '../auth/index.js';
import type { S3Context } from '../context.js';
import { s3Error, S3Error } from '../errors.js';

export const POST_FIELDS_BYTES_MAX = 20 * 1024;
const POST_FIELDS_MAX = 100;
const PART_HEADER_BYTES_MAX = 8 * 1024;

export interface PostForm {
  /** The fields before the file, by lower-case name. */
  fields: Map<string, string>;
  /** The file's bytes. */
  file: Readable;
  /** The file name the browser sent (base name only), '' if none. */
  filename: string;
  /** Settles once the whole body was read: resolves if it was a well-formed form and passed verification. */
  done: Promise<void>;
}

const malformed = () => s3Error('MalformedPOSTRequest', 'The body of your POST request is not well-formed multipart/form-data.');
const oneFile = () => s3Error('IncorrectNumberOfFilesInPostRequest', 'POST requires exactly one file upload per request.');

/** Starts reading the form; resolves when the file part begins (its fields all read). */
export function readPostForm(ctx: S3Context): Promise<PostForm> {
  let busboy: ReturnType<typeof Busboy>;
  try {
    busboy = Busboy({
      headers: { ...ctx.req.raw.headers, 'content-type': ctx.req.headers.get('content-type') ?? '' },
      isPartAFile: (name) => name?.toLowerCase() === 'file',
      limits: { fields: POST_FIELDS_MAX, fieldSize: POST_FIELDS_BYTES_MAX, files: 1, headerPairs: 16, headerSize: PART_HEADER_BYTES_MAX },
    });
  } catch {
    return Promise.reject(malformed());
  }
  const verifier = createBodyVerifier(ctx.auth, ctx.req.raw, { crc32c });
  return new Promise<PostForm>((resolve, reject) => {
    const fields = new Map<string, string>();
    let fieldsBytes = 0;
    let file: Readable | null = null;
    let failure: Error | null = null;
    const fail = (err: Error): void => {
      failure ??= err;
      if (file) file.destroy(failure);
      else reject(failure);
    };
    busboy.on('field', (name, value, _nameTruncated, valueTruncated) => {
      if (file || failure) return; // after the file: ignored, as S3
      const lower = name.toLowerCase();
      fieldsBytes += Buffer.byteLength(name) + Buffer.byteLength(value);
      if (valueTruncated || fieldsBytes > POST_FIELDS_BYTES_MAX) return fail(s3Error('MaxPostPreDataLengthExceeded', 'Your POST request fields preceding the upload file were too large.'));
      if (fields.has(lower)) return fail(s3Error('InvalidArgument', `The form field ${name} appears more than once.`, { ArgumentName: name }));
      fields.set(lower, value);
    });
    busboy.on('file', (_name, stream, filename) => {
      if (failure) {
        stream.on('error', () => undefined);
        return void stream.resume();
      }
      // The consumer reads a stream of ours: a part the parser finds cut short errors it as MalformedPOSTRequest.
      const out = new PassThrough();
      out.on('error', () => undefined); // a form refused before its file is read: nobody else listens
      stream.on('error', (err) => out.destroy(err instanceof S3Error || isS3AuthError(err) ? err : malformed()));
      stream.pipe(out);
      file = out;
      resolve({ fields, file: out, filename: filename ?? '', done });
    });
    busboy.on('fieldsLimit', () => fail(s3Error('MaxPostPreDataLengthExceeded', `Your POST request has more than ${POST_FIELDS_MAX} fields.`)));
    busboy.on('filesLimit', () => fail(oneFile()));
    busboy.on('partsLimit', () => fail(malformed()));
    const done = pipeline(ctx.req.raw, verifier, busboy).then(
      () => {
        if (failure) throw failure;
        if (!file) throw oneFile();
      },
      (err: unknown) => {
        throw err instanceof S3Error || isS3AuthError(err) ? err : malformed();
      },
    );
    done.catch((err: Error) => fail(err));
  });
}
