#!/usr/bin/env python3
"""Fails when a CUDA launch does not go to the calling thread's current stream.

Every kernel launch in kernels/*.cu (or the files given) must name internal::Stream() as its fourth
launch argument, every cudaMemsetAsync/cudaMemcpyAsync must pass it, and every cuBLAS product
must take its handle from HandleOnStream (which moves the handle to it): a CUDA graph records only
what goes to the stream it captures (kernels/graph.h), and a launch on the legacy stream during
capture breaks the recording.
"""
import glob
import os
import re
import sys


def launch_arguments(inside):
    """The top-level comma-separated arguments between <<< and >>>."""
    depth, current, arguments = 0, "", []
    for ch in inside:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            arguments.append(current.strip())
            current = ""
        else:
            current += ch
    arguments.append(current.strip())
    return arguments


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    files = sys.argv[1:] or sorted(glob.glob("kernels/*.cu"))
    bad = []
    launches = 0
    for path in files:
        text = open(path, encoding="utf-8").read()
        for match in re.finditer(r"<<<(.*?)>>>", text, re.S):
            launches += 1
            arguments = launch_arguments(match.group(1))
            if len(arguments) != 4 or arguments[3] != "internal::Stream()":
                line = text.count("\n", 0, match.start()) + 1
                bad.append(f"{path}:{line}: <<<{match.group(1).strip()}>>>")
        for match in re.finditer(r"cudaMem(set|cpy)Async\((.*?)\);", text, re.S):
            if "internal::Stream()" not in match.group(2):
                line = text.count("\n", 0, match.start()) + 1
                bad.append(f"{path}:{line}: {match.group(0)}")
        for match in re.finditer(r"\bcublasGemm\w*\(\s*([^,]*),", text):
            if match.group(1).strip() != "HandleOnStream(blas)":
                line = text.count("\n", 0, match.start()) + 1
                bad.append(f"{path}:{line}: {match.group(0)}")
    if bad:
        print("\n".join(bad))
        print("launches_name_the_stream: the launches above do not go to internal::Stream()",
              file=sys.stderr)
        return 1
    print(f"launches_name_the_stream: {launches} launches in {len(files)} files name the stream")
    return 0


if __name__ == "__main__":
    sys.exit(main())
