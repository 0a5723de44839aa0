/* What cffi sees of uvx.h and vxlan.h.  Constants are "...": the compiler
 * fills them in, so Python never repeats a value that C owns. */

#define UVX_BATCH_MAX ...
#define UVX_MAX_PORTS ...
#define UVX_VNI_PORTS ...
#define UVX_VNI_REMOTES ...
#define UVX_FRAME_MAX ...
#define VXLAN_HLEN ...
#define VXLAN_ENCAP_LEN ...
#define VXLAN_OVERHEAD ...
#define VXLAN_VNI_MAX ...

enum uvx_drop_reason {
	UVX_PASS,
	UVX_DROP_TRUNCATED,
	UVX_DROP_BAD_FLAGS,
	UVX_DROP_RESERVED,
	UVX_DROP_UNKNOWN_VNI,
	UVX_DROP_BAD_INNER,
	UVX_DROP_NO_DEST,
	UVX_DROP_LEARN_LIMIT,
	UVX_DROP_HAIRPIN,
	UVX_DROP_SPLIT_HORIZON,
	UVX_DROP_TOO_BIG,
	UVX_DROP_TAP_FULL,
	UVX_DROP_TAP_ERROR,
	UVX_DROP_UDP_ERROR,
	UVX_DROP_NO_PORT,
	UVX_DROP_BAD_GSO,
	UVX_DROP__MAX,
	...
};

enum fdb_learn_result {
	FDB_LEARN_NEW,
	FDB_LEARN_REFRESHED,
	FDB_LEARN_MOVED,
	FDB_LEARN_STATIC,
	FDB_LEARN_LIMIT,
	FDB_LEARN_FULL,
	...
};

struct uvx_config {
	uint32_t local_ip;
	uint16_t dst_port;
	uint16_t src_port_min;
	uint16_t src_port_max;
	uint32_t ageing_ms;
	uint32_t learn_limit;
	uint32_t fdb_capacity;
	uint32_t batch;
	uint8_t accept_reserved;
	uint8_t udp_csum;
	...;
	uint32_t rx_linger_us;
};

struct uvx_counters {
	uint64_t rx_packets;
	uint64_t rx_bytes;
	uint64_t tx_packets;
	uint64_t tx_bytes;
};

struct uvx_fdb_info {
	uint32_t vni;
	uint8_t mac[6];
	uint8_t is_static;
	uint8_t is_remote;
	int32_t port;
	uint32_t remote_ip;
	uint16_t remote_port;
	uint64_t age_ms;
	uint64_t idle_ms;
	...;
};

struct uvx_dp;

const char *uvx_version(void);
const char *uvx_source_digest(void);
void uvx_config_default(struct uvx_config *cfg);
struct uvx_dp *uvx_dp_new(const struct uvx_config *cfg, int *err);
void uvx_dp_free(struct uvx_dp *dp);
int uvx_tx_socket_open(uint32_t local_ip);
int uvx_dp_set_sockets(struct uvx_dp *dp, int udp_fd, int tx_fd);
int uvx_vni_add(struct uvx_dp *dp, uint32_t vni);
int uvx_vni_del(struct uvx_dp *dp, uint32_t vni);
int uvx_remote_add(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint16_t port);
int uvx_remote_del(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint16_t port);
#define UVX_ARP_OFF 0
#define UVX_ARP_ANSWER 1
#define UVX_ARP_ANSWER_ONLY 2
int uvx_vni_set_arp(struct uvx_dp *dp, uint32_t vni, int mode);
int uvx_arp_add(struct uvx_dp *dp, uint32_t vni, uint32_t ip, const uint8_t *mac);
int uvx_arp_del(struct uvx_dp *dp, uint32_t vni, uint32_t ip);
int uvx_arp_lookup(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint8_t *mac);
uint64_t uvx_vni_arp_replies(struct uvx_dp *dp, uint32_t vni);
#define UVX_PORT_VNET_HDR ...
#define UVX_POOL_MAX ...
#define UVX_EV_GSO_FAILED ...
int uvx_port_add(struct uvx_dp *dp, int fd, uint32_t vni, uint32_t flags);
int uvx_dp_set_pool(struct uvx_dp *dp, const int *fds, const uint16_t *ports,
		    unsigned n, int gso, int gro);
uint32_t uvx_dp_take_events(struct uvx_dp *dp);
int uvx_port_del(struct uvx_dp *dp, int port);
int uvx_fdb_add(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		int32_t port, uint32_t ip, uint16_t udp_port);
int uvx_fdb_del(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac);
int uvx_fdb_learn(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		  int32_t port, uint32_t ip, uint16_t udp_port, uint64_t now_ms);
int uvx_fdb_lookup(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		   struct uvx_fdb_info *out);
int uvx_fdb_dump(struct uvx_dp *dp, struct uvx_fdb_info *out, int max);
int uvx_fdb_age(struct uvx_dp *dp, uint64_t now_ms);
uint64_t uvx_now_ms(void);
int uvx_dp_start_threads(struct uvx_dp *dp);
int uvx_dp_stop_threads(struct uvx_dp *dp);
int uvx_tap_rx(struct uvx_dp *dp, int port);
int uvx_udp_rx(struct uvx_dp *dp);
uint64_t uvx_drops(struct uvx_dp *dp, int reason);
const char *uvx_drop_reason_name(int reason);
int uvx_port_counters(struct uvx_dp *dp, int port, struct uvx_counters *out);
int uvx_vni_counters(struct uvx_dp *dp, uint32_t vni, struct uvx_counters *out);

/* The codec, for tests and experiments beside the reference codec. */
int vxlan_parse(const uint8_t *pkt, size_t len, int accept_reserved,
		uint32_t *vni, size_t *inner_off);
int vxlan_check_inner(const uint8_t *frame, size_t len);
uint32_t vxlan_flow_hash(const uint8_t *frame, size_t len);
uint16_t vxlan_src_port(uint32_t hash, uint16_t min, uint16_t max);
size_t vxlan_build_datagram(uint8_t *out, size_t cap, uint32_t vni,
			    const uint8_t *frame, size_t len,
			    uint16_t sport, uint16_t dport,
			    uint32_t saddr, uint32_t daddr, int csum);

double uvx_bench_encap(const uint8_t *frame, size_t len, uint32_t n);
double uvx_bench_decap(const uint8_t *pkt, size_t len, uint32_t n);
double uvx_bench_fdb_lookup(struct uvx_dp *dp, uint32_t vni, const uint8_t *macs,
			    uint32_t nmacs, uint32_t n);
double uvx_bench_fdb_learn(struct uvx_dp *dp, uint32_t vni, const uint8_t *macs,
			   uint32_t nmacs, uint32_t n);
struct vnet_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
};
int uvx_tso_frames(const uint8_t *frame, size_t len, uint16_t mss, int v6,
		   uint8_t *out, size_t cap, size_t *lens, unsigned max);
int uvx_gro_join(const uint8_t *segs, const size_t *lens, unsigned n,
		 uint8_t *out, size_t cap, struct vnet_hdr *vh);
double uvx_bench_tso(const uint8_t *frame, size_t len, uint16_t mss, int v6, uint32_t n);
double uvx_bench_gro(const uint8_t *segs, const size_t *lens, unsigned nsegs, uint32_t n);
