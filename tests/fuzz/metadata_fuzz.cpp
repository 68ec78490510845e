// A provider's metadata as hastd and `hastctl dump` read it. The input is
// the whole provider image: decode_slot() on its start (one slot as the
// reader verifies it), then read_metadata() on the image as a file (both
// slots, slot B found from slot A's layout or by scanning), then the
// readings rendered as `hastctl dump` prints them. A slot that decodes must
// survive encode_slot/decode_slot unchanged.

#include "io/storage/metadata.hpp"
#include "io/storage/provider.hpp"
#include "tests/fuzz/fuzz_bytes.hpp"

#include <string>
#include <sys/mman.h>
#include <unistd.h>

using namespace hast;
using hast::fuzz::check;

namespace {

void check_round_trip(const metadata& md) {
  const auto bytes = encode_slot(md);
  const auto again =
      decode_slot({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  check(again.has_value());
  check(again->resource == md.resource && again->datasize == md.datasize &&
        again->extent_size == md.extent_size && again->keepdirty == md.keepdirty &&
        again->data_offset == md.data_offset && again->resuid == md.resuid &&
        again->localcnt == md.localcnt && again->remotecnt == md.remotecnt &&
        again->prevrole == md.prevrole && again->sequence == md.sequence &&
        again->bitmap == md.bitmap);
  (void)render_metadata(md);
  (void)metadata_json(md).dump();
}

/// The image as a file the provider layer can open (memory only).
int image_file(const uint8_t* data, std::size_t size) {
  const int fd = ::memfd_create("hast-fuzz-provider", MFD_CLOEXEC);
  if (fd < 0)
    return -1;
  std::size_t done = 0;
  while (done < size) {
    const auto n = ::write(fd, data + done, size - done);
    if (n <= 0) {
      ::close(fd);
      return -1;
    }
    done += static_cast<std::size_t>(n);
  }
  return fd;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (auto md = decode_slot({data, size}))
    check_round_trip(*md);

  const int fd = image_file(data, size);
  if (fd < 0)
    return 0;
  if (auto prov = provider::open("/proc/self/fd/" + std::to_string(fd), false)) {
    if (auto md = read_metadata(*prov, ""); md) {
      // Without a sum: data_offset + datasize near 2^64 would wrap.
      check(md->data_offset <= prov->size() && md->datasize <= prov->size() - md->data_offset);
      check(md->bitmap.size() == (md->datasize / md->extent_size
                                  + (md->datasize % md->extent_size != 0 ? 1 : 0) + 7) / 8);
      check_round_trip(*md);
    }
  }
  ::close(fd);
  return 0;
}
