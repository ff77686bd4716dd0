"""Summarises a valgrind DHAT profile of the gateway (bench/profile.sh).

    dhat_summary.py allocs DHAT_OUT REQUESTS   # heap blocks allocated per request, by call site
    dhat_summary.py held DHAT_OUT STREAMS      # heap bytes held per open stream at the peak, by call site

TOP=n shows the n biggest call sites (default 20).

A call site is named by its first three frames outside the allocator and
the standard library's collection internals.
"""

import json
import os
import re
import sys

NOISE = re.compile(
    r"malloc|calloc|realloc|memalign|alloc::|__rust|RawVec|exchange_malloc|box_new|"
    r"Box<T>::new|Arc<T>::new|Vec<T>|with_capacity|BytesMut::reserve|reserve_inner|"
    r"from_vec|into_boxed|core::ptr|to_vec|String::from|to_owned|clone|"
    r"tokio::runtime::task::|spawn|UnknownInlinedFun|^alloc$|^\{closure|^alloc_impl|^allocate|"
    r"grow|do_reserve|reserve_for_push|new_uninit|^try_allocate|^new<|^new$|^from_iter|^extend|"
    r"^push|^insert"
)


def sites(profile, total_key, blocks_key):
    frames = profile["ftbl"]
    out = {}
    for pp in profile["pps"]:
        names = [re.sub(r"^0x[0-9A-Fa-f]+: ", "", frames[i]).split(" (")[0] for i in pp["fs"]]
        key = " <- ".join(n[:90] for n in [n for n in names if not NOISE.search(n)][:3])
        bytes_, blocks = out.get(key, (0, 0))
        out[key] = (bytes_ + pp.get(total_key, 0), blocks + pp.get(blocks_key, 0))
    return out


def main() -> None:
    mode, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if count <= 0:
        sys.exit(f"{mode}: nothing was measured (count {count})")
    if mode not in ("allocs", "held"):
        sys.exit(f"unknown mode {mode}")
    profile = json.load(open(path))
    allocs = mode == "allocs"
    # Totals over the run (allocs) or live at the heap's peak (held).
    by_site = sites(profile, *(("tb", "tbk") if allocs else ("gb", "gbk")))
    total_bytes = sum(b for b, _ in by_site.values())
    total_blocks = sum(k for _, k in by_site.values())
    if allocs:
        unit = "request"
        print(f"heap blocks allocated per request: {total_blocks / count:.1f} "
              f"({total_blocks} over {count} requests, start-up included)")
    else:
        unit = "stream"
        print(f"heap bytes held per open stream at the peak: {total_bytes / count:.0f} "
              f"({total_bytes} over {count} streams)")
    ranked = sorted(by_site.items(), key=lambda kv: -kv[1][1 if allocs else 0])
    for key, (bytes_, blocks) in ranked[: int(os.environ.get("TOP", "20"))]:
        print(f"  {blocks / count:6.2f} blocks {bytes_ / count:7.0f} B per {unit}  {key}")


if __name__ == "__main__":
    main()
