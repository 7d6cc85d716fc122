// dataplane/dpdk/dpdk_wire.cc — see dpdk_wire.h.
#include "dataplane/dpdk/dpdk_wire.h"

#include <cstdio>
#include <cstring>

namespace ferry::dataplane::dpdk {
namespace {

inline void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void put32(uint8_t* p, uint32_t v) {
  put16(p, static_cast<uint16_t>(v >> 16));
  put16(p + 2, static_cast<uint16_t>(v));
}
inline uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t get32(const uint8_t* p) { return uint32_t{get16(p)} << 16 | get16(p + 2); }

constexpr uint16_t kTypeIpv4 = 0x0800;
constexpr uint16_t kTypeArp = 0x0806;
constexpr uint8_t kProtoUdp = 17;

}  // namespace

std::optional<uint32_t> parse_ipv4(const std::string& text) {
  unsigned a, b, c, d;
  char tail;
  if (std::sscanf(text.c_str(), "%3u.%3u.%3u.%3u%c", &a, &b, &c, &d, &tail) != 4) {
    return std::nullopt;
  }
  if (a > 255 || b > 255 || c > 255 || d > 255) return std::nullopt;
  return a << 24 | b << 16 | c << 8 | d;
}

std::string format_ipv4(uint32_t ip) {
  return std::to_string(ip >> 24) + "." + std::to_string(ip >> 16 & 255) + "." +
         std::to_string(ip >> 8 & 255) + "." + std::to_string(ip & 255);
}

std::string format_mac(const Mac& m) {
  char s[18];
  std::snprintf(s, sizeof s, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return s;
}

uint16_t ipv4_checksum(const uint8_t* h, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += get16(h + i);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

void write_udp_headers(uint8_t* out, const UdpAddressing& a, size_t payload_len, uint16_t ip_id,
                       bool ip_checksum) {
  std::memcpy(out, a.dst_mac.data(), 6);
  std::memcpy(out + 6, a.src_mac.data(), 6);
  put16(out + 12, kTypeIpv4);
  uint8_t* ip = out + kEthHeader;
  ip[0] = 0x45;
  ip[1] = 0;
  put16(ip + 2, static_cast<uint16_t>(kIpv4Header + kUdpHeader + payload_len));
  put16(ip + 4, ip_id);
  put16(ip + 6, 0x4000);  // DF: reliable/ never sends more than the MTU
  ip[8] = 64;
  ip[9] = kProtoUdp;
  put16(ip + 10, 0);
  put32(ip + 12, a.src_ip);
  put32(ip + 16, a.dst_ip);
  if (ip_checksum) put16(ip + 10, ipv4_checksum(ip, kIpv4Header));
  uint8_t* udp = ip + kIpv4Header;
  put16(udp, a.src_port);
  put16(udp + 2, a.dst_port);
  put16(udp + 4, static_cast<uint16_t>(kUdpHeader + payload_len));
  put16(udp + 6, 0);
}

void write_arp(uint8_t* out, ArpOp op, const Mac& eth_dst, const Mac& sender_mac,
               uint32_t sender_ip, const Mac& target_mac, uint32_t target_ip) {
  std::memcpy(out, eth_dst.data(), 6);
  std::memcpy(out + 6, sender_mac.data(), 6);
  put16(out + 12, kTypeArp);
  uint8_t* a = out + kEthHeader;
  put16(a, 1);
  put16(a + 2, kTypeIpv4);
  a[4] = 6;
  a[5] = 4;
  put16(a + 6, static_cast<uint16_t>(op));
  std::memcpy(a + 8, sender_mac.data(), 6);
  put32(a + 14, sender_ip);
  std::memcpy(a + 18, target_mac.data(), 6);
  put32(a + 24, target_ip);
}

ParsedFrame parse_frame(const uint8_t* f, size_t len, bool check_ip_checksum) {
  ParsedFrame p;
  if (len < kEthHeader) {
    p.kind = ParsedFrame::Kind::kMalformed;
    return p;
  }
  std::memcpy(p.src_mac.data(), f + 6, 6);
  const uint16_t type = get16(f + 12);
  if (type == kTypeArp) {
    const uint8_t* a = f + kEthHeader;
    if (len < kArpFrame || get16(a) != 1 || get16(a + 2) != kTypeIpv4 || a[4] != 6 || a[5] != 4) {
      p.kind = ParsedFrame::Kind::kMalformed;
      return p;
    }
    const uint16_t op = get16(a + 6);
    if (op != 1 && op != 2) {
      p.kind = ParsedFrame::Kind::kOther;
      return p;
    }
    p.kind = ParsedFrame::Kind::kArp;
    p.arp_op = static_cast<ArpOp>(op);
    std::memcpy(p.arp_sender_mac.data(), a + 8, 6);
    p.arp_sender_ip = get32(a + 14);
    p.arp_target_ip = get32(a + 24);
    return p;
  }
  if (type != kTypeIpv4) return p;  // kOther
  const uint8_t* ip = f + kEthHeader;
  const size_t ip_room = len - kEthHeader;
  p.kind = ParsedFrame::Kind::kMalformed;
  if (ip_room < kIpv4Header || (ip[0] >> 4) != 4) return p;
  const size_t ihl = size_t{ip[0] & 15u} * 4;
  const size_t total = get16(ip + 2);
  // Ethernet pads short frames, so the IP length may be below what arrived, never above.
  if (ihl < kIpv4Header || total < ihl || total > ip_room) return p;
  if (check_ip_checksum && ipv4_checksum(ip, ihl) != 0) return p;
  if ((get16(ip + 6) & 0x3fff) != 0) return p;  // a fragment (MF or an offset)
  if (ip[9] != kProtoUdp) {
    p.kind = ParsedFrame::Kind::kOther;
    return p;
  }
  const uint8_t* udp = ip + ihl;
  const size_t udp_room = total - ihl;
  if (udp_room < kUdpHeader) return p;
  const size_t udp_len = get16(udp + 4);
  if (udp_len < kUdpHeader || udp_len > udp_room) return p;
  p.kind = ParsedFrame::Kind::kUdp;
  p.udp.src_mac = p.src_mac;
  std::memcpy(p.udp.dst_mac.data(), f, 6);
  p.udp.src_ip = get32(ip + 12);
  p.udp.dst_ip = get32(ip + 16);
  p.udp.src_port = get16(udp);
  p.udp.dst_port = get16(udp + 2);
  p.payload = udp + kUdpHeader;
  p.len = udp_len - kUdpHeader;
  return p;
}

}  // namespace ferry::dataplane::dpdk
