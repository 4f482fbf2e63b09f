/**
 * aws-chunked is a transfer framing, not a property of the object: S3 drops
 * it from the Content-Encoding it stores (`aws-chunked,gzip` is stored as
 * `gzip`; `aws-chunked` alone as nothing).
 */
export function storedContentEncoding(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const kept = value.split(',').map((token) => token.trim()).filter((token) => token !== '' && token.toLowerCase() !== 'aws-chunked');
  return kept.length === 0 ? undefined : kept.join(',');
}
