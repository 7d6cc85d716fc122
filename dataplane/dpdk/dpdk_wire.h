// dataplane/dpdk/dpdk_wire.h — the Ethernet, ARP, IPv4 and UDP headers the `dpdk` transport
// writes and reads itself, since a DPDK port has no kernel stack behind it. Plain bytes in and
// out, no DPDK types, so the unit suite tests it without an EAL.
//
// A ferry datagram on the wire:
//   ethernet  dst mac(6) src mac(6) type 0x0800(2)
//   ipv4      ver/ihl 0x45, tos 0, total length, id, flags DF (0x4000), ttl 64, proto 17,
//             header checksum, src ip, dst ip                       (20 bytes, no options)
//   udp       src port, dst port, length, checksum 0 (none: ferry frames carry CRC32C)
//   payload   one datagram of reliable/ (never IP-fragmented: reliable/ cuts frames to the MTU)
// ARP (RFC 826, Ethernet/IPv4 only): htype 1, ptype 0x0800, hlen 6, plen 4, op 1 request /
// 2 reply, sender mac, sender ip, target mac, target ip.
// All multi-byte fields big-endian; addresses here are host-order uint32_t.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace ferry::dataplane::dpdk {

using Mac = std::array<uint8_t, 6>;
inline constexpr Mac kBroadcastMac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

inline constexpr size_t kEthHeader = 14;
inline constexpr size_t kIpv4Header = 20;
inline constexpr size_t kUdpHeader = 8;
inline constexpr size_t kUdpHeaders = kEthHeader + kIpv4Header + kUdpHeader;  // 42
inline constexpr size_t kArpFrame = kEthHeader + 28;                          // 42
static_assert(kUdpHeaders == 42 && kArpFrame == 42);

// "a.b.c.d" -> host-order address; nullopt when malformed.
std::optional<uint32_t> parse_ipv4(const std::string& text);
std::string format_ipv4(uint32_t ip);
std::string format_mac(const Mac& mac);

// The Internet checksum of an IPv4 header (ihl*4 bytes), as stored (big-endian in memory).
uint16_t ipv4_checksum(const uint8_t* header, size_t len);

struct UdpAddressing {
  Mac src_mac{}, dst_mac{};
  uint32_t src_ip = 0, dst_ip = 0;
  uint16_t src_port = 0, dst_port = 0;
};

// Writes the 42 header bytes in front of a payload of payload_len bytes. ip_checksum = false
// leaves the IPv4 checksum 0 for the NIC to fill (offload).
void write_udp_headers(uint8_t* out, const UdpAddressing& a, size_t payload_len, uint16_t ip_id,
                       bool ip_checksum);

enum class ArpOp : uint16_t { kRequest = 1, kReply = 2 };
// Writes a 42-byte ARP frame (Ethernet header included).
void write_arp(uint8_t* out, ArpOp op, const Mac& eth_dst, const Mac& sender_mac,
               uint32_t sender_ip, const Mac& target_mac, uint32_t target_ip);

// What one received Ethernet frame is, for the receive demux.
struct ParsedFrame {
  enum class Kind : uint8_t {
    kUdp,       // IPv4/UDP, not fragmented, lengths consistent: payload/len set
    kArp,       // Ethernet/IPv4 ARP: arp_* set
    kOther,     // another ethertype or IP protocol: not ferry's
    kMalformed  // too short, inconsistent lengths, bad IPv4 checksum, or an IP fragment
  };
  Kind kind = Kind::kOther;
  Mac src_mac{};
  UdpAddressing udp;  // kUdp (src_* = the sender's)
  const uint8_t* payload = nullptr;
  size_t len = 0;
  ArpOp arp_op = ArpOp::kRequest;  // kArp
  Mac arp_sender_mac{};
  uint32_t arp_sender_ip = 0, arp_target_ip = 0;
};

// check_ip_checksum = false when the NIC verified it (offload flag on the mbuf).
ParsedFrame parse_frame(const uint8_t* frame, size_t len, bool check_ip_checksum);

}  // namespace ferry::dataplane::dpdk
