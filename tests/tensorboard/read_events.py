#!/usr/bin/env python3
"""Reads TensorBoard event files with python3-protobuf (event.proto compiled by protoc), independently of the C++
writer: checks both masked CRC32Cs of every TFRecord, prints one JSON line per record.
Usage: read_events.py EVENTS_FILE OUT_DIR   (exit 3: protoc or python3-protobuf missing)"""
import json, os, struct, subprocess, sys

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF

def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF

def main():
    path, out = sys.argv[1], sys.argv[2]
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        import google.protobuf  # noqa: F401
        subprocess.run(["protoc", "-I", here, "--python_out", out, os.path.join(here, "event.proto")], check=True)
    except (ImportError, FileNotFoundError, subprocess.CalledProcessError) as e:
        print("reader unavailable:", e)
        sys.exit(3)
    sys.path.insert(0, out)
    import event_pb2
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert hcrc == masked(header), "length CRC mismatch at %d" % pos
        body = data[pos + 12:pos + 12 + n]
        (dcrc,) = struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])
        assert dcrc == masked(body), "data CRC mismatch at %d" % pos
        pos += 16 + n
        e = event_pb2.Event()
        e.ParseFromString(body)
        rec = {"step": e.step, "wall_time": e.wall_time}
        if e.HasField("file_version"):
            rec["file_version"] = e.file_version
        for v in e.summary.value:
            if v.HasField("simple_value"):
                rec.setdefault("scalars", {})[v.tag] = v.simple_value
            if v.HasField("image"):
                rec.setdefault("images", {})[v.tag] = [v.image.height, v.image.width, v.image.colorspace,
                                                       len(v.image.encoded_image_string)]
        print(json.dumps(rec))

main()
