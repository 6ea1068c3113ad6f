package cluster

// FreeBind is freeBind for the external tests (package cluster_test): a
// loopback cluster address free now, whose health port is free too.
var FreeBind = freeBind
