/** Splits a byte stream into lines (without the newline and any trailing \r). */
export class LineBuffer {
  private chunks: Buffer[] = []

  push (chunk: Buffer): Buffer[] {
    const lines: Buffer[] = []
    let start = 0
    let newline = chunk.indexOf(0x0a)
    while (newline !== -1) {
      this.chunks.push(chunk.subarray(start, newline))
      const line = Buffer.concat(this.chunks)
      this.chunks = []
      lines.push(line.length > 0 && line[line.length - 1] === 0x0d ? line.subarray(0, line.length - 1) : line)
      start = newline + 1
      newline = chunk.indexOf(0x0a, start)
    }
    if (start < chunk.length) this.chunks.push(chunk.subarray(start))
    return lines
  }

  clear (): void {
    this.chunks = []
  }
}
