// Command imagebuild writes cronkit's container image as a docker-archive tarball
// (what `docker load` and `crane push` read) without a Docker daemon: one layer
// holding the static binary at /usr/bin/cronkit (and an empty /tmp) on an empty
// base, run as a numeric non-root user with cronkit as the entrypoint. Every time in
// it is SOURCE_DATE_EPOCH, so one binary gives one image digest. `make image` runs
// it; scripts/checkimage checks what it wrote.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// options are the command line: what goes into the image and what it is called.
type options struct {
	binary, tag, version, revision, source, arch, out string
	uid                                               int
	created                                           time.Time
}

func main() {
	var o options
	flag.StringVar(&o.binary, "binary", "", "static cronkit binary for --arch")
	flag.StringVar(&o.tag, "tag", "", "image reference the tarball names, e.g. ghcr.io/cronkit/cronkit:0.1.0")
	flag.StringVar(&o.version, "version", "", "org.opencontainers.image.version")
	flag.StringVar(&o.revision, "revision", "", "org.opencontainers.image.revision: the commit")
	flag.StringVar(&o.source, "source", "https://github.com/cronkit/cronkit", "org.opencontainers.image.source")
	flag.StringVar(&o.arch, "arch", "amd64", "the binary's GOARCH")
	flag.IntVar(&o.uid, "uid", 65532, "numeric user and group the entrypoint runs as (not root)")
	flag.StringVar(&o.out, "out", "", "tarball to write")
	flag.Parse()
	sde, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild: SOURCE_DATE_EPOCH must be the commit time in seconds (make image sets it)")
		os.Exit(2)
	}
	o.created = time.Unix(sde, 0).UTC()
	if err := build(o); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func build(o options) error {
	if o.binary == "" || o.tag == "" || o.out == "" || o.version == "" || o.revision == "" {
		return errors.New("--binary, --tag, --version, --revision and --out are required")
	}
	if o.uid <= 0 {
		return fmt.Errorf("--uid %d: the image must not run as root", o.uid)
	}
	ref, err := name.NewTag(o.tag)
	if err != nil {
		return fmt.Errorf("parse --tag: %w", err)
	}
	bin, err := os.ReadFile(o.binary)
	if err != nil {
		return fmt.Errorf("read binary: %w", err)
	}
	img, err := image(o, bin)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(o.out, ref, img); err != nil {
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	d, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image digest: %w", err)
	}
	fmt.Printf("%s %s %s\n", o.out, ref, d)
	return nil
}

// image is the binary's layer on the empty base with cronkit's config.
func image(o options, bin []byte) (v1.Image, error) {
	layerTar, err := layer(bin, o.created)
	if err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	created := v1.Time{Time: o.created}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: l,
		History: v1.History{
			Created:   created,
			CreatedBy: "tools/imagebuild: /usr/bin/cronkit " + o.version,
			Comment:   "static cronkit binary (CA roots and IANA zones embedded)",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = o.arch, "linux"
	cf.Created = created
	user := strconv.Itoa(o.uid)
	cf.Config.User = user + ":" + user
	cf.Config.Entrypoint = []string{"/usr/bin/cronkit"}
	cf.Config.Cmd = []string{"--help"}
	cf.Config.WorkingDir = "/"
	// TZ: the jobs compute in UTC whatever the node's zone; the zones they need
	// (accounts', CRON_TZ) come from the binary's embedded tzdata.
	cf.Config.Env = []string{"TZ=UTC", "TMPDIR=/tmp"}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.source":   o.source,
		"org.opencontainers.image.version":  o.version,
		"org.opencontainers.image.revision": o.revision,
		"org.opencontainers.image.created":  o.created.Format(time.RFC3339),
		"org.opencontainers.image.title":    "cronkit",
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

// layer is the filesystem: /usr/bin/cronkit and a sticky /tmp (reconcile's dry runs
// sort on disk), root-owned, every time at created.
func layer(bin []byte, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		hdr  tar.Header
		body []byte
	}{
		{tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}, nil},
		{tar.Header{Typeflag: tar.TypeDir, Name: "usr/", Mode: 0o755}, nil},
		{tar.Header{Typeflag: tar.TypeDir, Name: "usr/bin/", Mode: 0o755}, nil},
		{tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/cronkit", Mode: 0o755, Size: int64(len(bin))}, bin},
	}
	for _, e := range entries {
		h := e.hdr
		h.ModTime, h.Format = created, tar.FormatPAX
		h.Uname, h.Gname = "root", "root"
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("layer %s: %w", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("layer %s: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}
