/**
 * The aws-chunked body decoder:
 *
 *   hex-size[;chunk-signature=<sig>]\r\n <data> \r\n ... 0[;chunk-signature=<sig>]\r\n
 *   [trailer-name:value\r\n ... [x-amz-trailer-signature:<sig>\r\n]] \r\n
 *
 * Only chunk data ever reaches the output, as views of the input (no copy).
 * Signed chunks (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]) are held until
 * their signature, chained from the seed, is verified: at most one chunk is
 * held, and its size is bounded by signedChunkBytesMax. Lines and trailers are
 * bounded too. The decoded length must equal x-amz-decoded-content-length.
 *
 * Tolerated, because real clients do it: an empty line between the final
 * chunk and the trailers (AWS's documented example), and the body ending
 * without the final empty line. Everything else malformed is an S3AuthError:
 * IncompleteBody when the body stops early, SignatureDoesNotMatch for a bad
 * or missing signature, InvalidRequest / MalformedTrailerError for bad framing.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { s3Error } from './errors.js';
import type { AuthLimits } from './limits.js';
import { EMPTY_SHA256_HEX, isSignatureForm, type ChunkChain } from './signing.js';

export interface AwsChunkedOptions {
  /** The signature chain of a chunk-signed body; null for STREAMING-UNSIGNED-PAYLOAD-TRAILER. */
  chain: ChunkChain | null;
  /** The trailer names x-amz-trailer declares (lower-case): the trailer carries exactly these. */
  expectedTrailers: readonly string[];
  /** STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: x-amz-trailer-signature is required and verified. */
  signedTrailer: boolean;
  /** x-amz-decoded-content-length. */
  decodedLengthBytes: number;
  limits: Pick<AuthLimits, 'signedChunkBytesMax' | 'unsignedChunkBytesMax' | 'chunkHeaderLineBytesMax' | 'trailerBytesMax' | 'trailerCountMax'>;
}

type State = 'header' | 'data' | 'data-cr' | 'data-lf' | 'trailer' | 'done';

const TRAILER_SIGNATURE = 'x-amz-trailer-signature';
/** Views of a signed chunk held before they are merged into one buffer. */
const HELD_VIEWS_MAX = 1024;
const SIZE_LINE = /^([0-9a-fA-F]{1,16})((?:;[^;]*)*)$/;

/** The framing state machine; feed it with push(), end it with finish(). */
export class AwsChunkedParser {
  readonly #options: AwsChunkedOptions;
  #state: State = 'header';
  #line = '';
  #remainingBytes = 0;
  #decodedBytes = 0;
  #chunkSignature = '';
  #chunkHash: Hash | null = null;
  #held: Buffer[] = [];
  #trailers: [string, string][] = [];
  #trailerBytes = 0;
  #sawTrailerSeparator = false;

  constructor(options: AwsChunkedOptions) {
    this.#options = options;
  }

  get decodedBytes(): number {
    return this.#decodedBytes;
  }

  /** Decodes input; emit receives object data only (verified, for signed chunks). */
  push(input: Buffer, emit: (data: Buffer) => void): void {
    let pos = 0;
    while (pos < input.length) {
      switch (this.#state) {
        case 'header':
        case 'trailer':
          pos = this.#readLine(input, pos);
          break;
        case 'data':
          pos = this.#readData(input, pos, emit);
          break;
        case 'data-cr':
        case 'data-lf':
          pos = this.#readDataEnd(input, pos);
          break;
        case 'done':
          throw s3Error('InvalidRequest', 'The aws-chunked body has data after its end.');
      }
    }
  }

  /** The body ended: the framing must be complete. Returns the trailers (lower-case names, signature excluded). */
  finish(): Map<string, string> {
    // A body may end without the final empty line, but only once every trailer it owes has arrived;
    // an empty line taken for the optional separator was in fact the end (and the trailers are missing).
    if (this.#state === 'trailer' && this.#line === '') {
      const endedByEmptyLine = this.#sawTrailerSeparator && this.#trailers.length === 0;
      if (endedByEmptyLine || this.#trailersComplete()) this.#endTrailers();
    }
    if (this.#state !== 'done') throw s3Error('IncompleteBody', 'The aws-chunked body ended before its final chunk and trailers.');
    return new Map(this.#trailers.filter(([name]) => name !== TRAILER_SIGNATURE));
  }

  #readLine(input: Buffer, start: number): number {
    const newline = input.indexOf(0x0a, start);
    const end = newline < 0 ? input.length : newline;
    const lineMax = this.#state === 'header' ? this.#options.limits.chunkHeaderLineBytesMax : this.#options.limits.trailerBytesMax;
    if (this.#line.length + (end - start) > lineMax + 1) throw this.#lineTooLong();
    this.#line += input.toString('latin1', start, end);
    if (newline < 0) return input.length;
    if (!this.#line.endsWith('\r')) throw s3Error('InvalidRequest', 'An aws-chunked line does not end with CRLF.');
    const line = this.#line.slice(0, -1);
    this.#line = '';
    if (this.#state === 'header') this.#onSizeLine(line);
    else this.#onTrailerLine(line);
    return newline + 1;
  }

  #lineTooLong(): Error {
    return this.#state === 'header'
      ? s3Error('InvalidRequest', `An aws-chunked chunk header is longer than ${this.#options.limits.chunkHeaderLineBytesMax} bytes.`)
      : s3Error('MalformedTrailerError', `The trailers are longer than ${this.#options.limits.trailerBytesMax} bytes.`);
  }

  #onSizeLine(line: string): void {
    const m = SIZE_LINE.exec(line);
    if (!m) throw s3Error('InvalidRequest', 'An aws-chunked chunk header is malformed.');
    const sizeBytes = parseInt(m[1]!, 16);
    const signed = this.#options.chain !== null;
    const sizeMax = signed ? this.#options.limits.signedChunkBytesMax : this.#options.limits.unsignedChunkBytesMax;
    if (sizeBytes > sizeMax) throw s3Error('InvalidRequest', `An aws-chunked chunk is larger than ${sizeMax} bytes.`);
    this.#chunkSignature = this.#chunkSignatureOf(m[2]!);
    if (this.#decodedBytes + sizeBytes > this.#options.decodedLengthBytes) {
      throw s3Error('InvalidRequest', 'The aws-chunked body is longer than x-amz-decoded-content-length.');
    }
    if (sizeBytes === 0) return this.#onFinalChunk();
    this.#remainingBytes = sizeBytes;
    this.#chunkHash = signed ? createHash('sha256') : null;
    this.#state = 'data';
  }

  /** The chunk-signature extension: required (64 hex) when signed, absent when not. */
  #chunkSignatureOf(extensions: string): string {
    const signed = this.#options.chain !== null;
    if (extensions === '') {
      if (signed) throw s3Error('SignatureDoesNotMatch', 'An aws-chunked chunk has no chunk-signature.');
      return '';
    }
    const ext = extensions.slice(1);
    if (!signed || ext.includes(';') || !ext.startsWith('chunk-signature=')) {
      throw s3Error('InvalidRequest', 'An aws-chunked chunk header has an unexpected extension.');
    }
    const signature = ext.slice('chunk-signature='.length);
    if (!isSignatureForm(signature)) throw s3Error('SignatureDoesNotMatch', 'An aws-chunked chunk-signature is malformed.');
    return signature;
  }

  #onFinalChunk(): void {
    if (this.#options.chain !== null && !this.#options.chain.verifyChunk(EMPTY_SHA256_HEX, this.#chunkSignature)) {
      throw s3Error('SignatureDoesNotMatch', 'The signature of the final aws-chunked chunk does not match.');
    }
    if (this.#decodedBytes < this.#options.decodedLengthBytes) {
      throw s3Error('IncompleteBody', 'You did not provide the number of bytes specified by the x-amz-decoded-content-length HTTP header.');
    }
    this.#state = 'trailer';
  }

  #readData(input: Buffer, start: number, emit: (data: Buffer) => void): number {
    const takeBytes = Math.min(this.#remainingBytes, input.length - start);
    const view = input.subarray(start, start + takeBytes);
    this.#remainingBytes -= takeBytes;
    this.#decodedBytes += takeBytes;
    if (this.#chunkHash === null) {
      emit(view);
    } else {
      this.#chunkHash.update(view);
      this.#held.push(view);
      // Pathologically small input pieces: keep the held list short (one copy, bounded by the chunk size).
      if (this.#held.length > HELD_VIEWS_MAX) this.#held = [Buffer.concat(this.#held)];
    }
    if (this.#remainingBytes === 0) {
      this.#releaseChunk(emit);
      this.#state = 'data-cr';
    }
    return start + takeBytes;
  }

  /** A signed chunk is complete: verify it, then let its data go. */
  #releaseChunk(emit: (data: Buffer) => void): void {
    if (this.#chunkHash === null) return;
    if (!this.#options.chain!.verifyChunk(this.#chunkHash.digest('hex'), this.#chunkSignature)) {
      throw s3Error('SignatureDoesNotMatch', 'The signature of an aws-chunked chunk does not match its data.');
    }
    const held = this.#held;
    this.#held = [];
    this.#chunkHash = null;
    for (const view of held) emit(view);
  }

  #readDataEnd(input: Buffer, pos: number): number {
    const expected = this.#state === 'data-cr' ? 0x0d : 0x0a;
    if (input[pos] !== expected) throw s3Error('InvalidRequest', 'aws-chunked chunk data is not followed by CRLF (the chunk is longer than its size).');
    this.#state = this.#state === 'data-cr' ? 'data-lf' : 'header';
    return pos + 1;
  }

  #onTrailerLine(line: string): void {
    if (line === '') {
      const expectsTrailers = this.#options.expectedTrailers.length > 0 || this.#options.signedTrailer;
      if (expectsTrailers && this.#trailers.length === 0 && !this.#sawTrailerSeparator) {
        this.#sawTrailerSeparator = true;
        return;
      }
      return this.#endTrailers();
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw s3Error('MalformedTrailerError', 'The request contained trailing data that was not well-formed.');
    this.#trailerBytes += line.length + 2;
    if (this.#trailers.length >= this.#options.limits.trailerCountMax || this.#trailerBytes > this.#options.limits.trailerBytesMax) {
      throw s3Error('MalformedTrailerError', 'The request contained too many trailing headers.');
    }
    const name = line.slice(0, colon).trim().toLowerCase();
    if (this.#trailers.some(([n]) => n === name)) throw s3Error('MalformedTrailerError', `The trailer ${name} appears twice.`);
    this.#trailers.push([name, line.slice(colon + 1).trim()]);
  }

  #trailersComplete(): boolean {
    const names = this.#trailers.map(([name]) => name);
    const signatureOwed = this.#options.signedTrailer && !names.includes(TRAILER_SIGNATURE);
    return !signatureOwed && this.#options.expectedTrailers.every((name) => names.includes(name));
  }

  /** The trailers are complete: exactly the declared ones, and the signature when signed. */
  #endTrailers(): void {
    const { expectedTrailers, signedTrailer, chain } = this.#options;
    const names = this.#trailers.map(([name]) => name).filter((name) => name !== TRAILER_SIGNATURE);
    const unexpected = names.find((name) => !expectedTrailers.includes(name));
    if (unexpected !== undefined) throw s3Error('MalformedTrailerError', `The trailer ${unexpected} was not declared in x-amz-trailer.`);
    const missing = expectedTrailers.find((name) => !names.includes(name));
    if (missing !== undefined) throw s3Error('MalformedTrailerError', `The trailer ${missing} declared in x-amz-trailer is missing.`);
    const signature = this.#trailers.find(([name]) => name === TRAILER_SIGNATURE)?.[1];
    if (!signedTrailer) {
      if (signature !== undefined) throw s3Error('MalformedTrailerError', 'An x-amz-trailer-signature was sent for an unsigned trailer.');
    } else {
      if (signature === undefined) throw s3Error('SignatureDoesNotMatch', 'The trailer has no x-amz-trailer-signature.');
      const canonical = this.#trailers.filter(([name]) => name !== TRAILER_SIGNATURE).map(([name, value]) => `${name}:${value}\n`).join('');
      if (!chain!.verifyTrailer(canonical, signature)) throw s3Error('SignatureDoesNotMatch', 'The trailer signature does not match.');
    }
    this.#state = 'done';
  }
}

/** The parser as a Node Transform: aws-chunked in, object data out; `trailers` is set once it has flushed. */
export class AwsChunkedDecoder extends Transform {
  readonly #parser: AwsChunkedParser;
  trailers: Map<string, string> | null = null;

  constructor(options: AwsChunkedOptions) {
    super();
    this.#parser = new AwsChunkedParser(options);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.#parser.push(chunk, (data) => this.push(data));
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.trailers = this.#parser.finish();
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }
}
