// Package media is what the Graph passthrough knows about WhatsApp media: WhatsApp's size
// limit of each kind of media, the check of a multipart upload while it streams through
// to Meta (Upload), and which media ids belong to which tenant (Repository): uploaded
// through aerogate, or received in the tenant's inbound messages.
package media

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Kind is a WhatsApp media kind.
type Kind string

const (
	KindImage    Kind = "image"
	KindAudio    Kind = "audio"
	KindVideo    Kind = "video"
	KindSticker  Kind = "sticker"
	KindDocument Kind = "document"
)

// WhatsApp's media size limits (Cloud API, supported media types), read as binary
// units: a file Meta accepts is never refused here.
const (
	MaxImageBytes    = 5 << 20
	MaxAudioBytes    = 16 << 20
	MaxVideoBytes    = 16 << 20
	MaxStickerBytes  = 500 << 10 // animated; static stickers are 100 KB at Meta
	MaxDocumentBytes = 100 << 20
)

// KindOf is the WhatsApp media kind of a MIME type: image/jpeg and image/png are
// images, image/webp is a sticker, audio/* audio, video/* video, anything else a
// document. Parameters and case are ignored.
func KindOf(mimeType string) Kind {
	t, _, err := mime.ParseMediaType(mimeType)
	if err != nil {
		t = strings.ToLower(strings.TrimSpace(mimeType))
	}
	switch {
	case t == "image/jpeg", t == "image/png":
		return KindImage
	case t == "image/webp":
		return KindSticker
	case strings.HasPrefix(t, "audio/"):
		return KindAudio
	case strings.HasPrefix(t, "video/"):
		return KindVideo
	}
	return KindDocument
}

// Limit is WhatsApp's size limit of a kind of media.
func (k Kind) Limit() int64 {
	switch k {
	case KindImage:
		return MaxImageBytes
	case KindAudio:
		return MaxAudioBytes
	case KindVideo:
		return MaxVideoBytes
	case KindSticker:
		return MaxStickerBytes
	}
	return MaxDocumentBytes
}

// Source is how a tenant came to own a media id.
type Source string

const (
	// SourceUploaded: uploaded through the gateway's passthrough.
	SourceUploaded Source = "uploaded"
	// SourceInbound: received in one of the tenant's inbound messages.
	SourceInbound Source = "inbound"
)

// ErrNotFound means the tenant owns no media of that id; another tenant's media is not
// found either.
var ErrNotFound = errors.New("media not found")

// Repository records and finds the media ids each tenant owns (the media table).
type Repository struct {
	pool *pgxpool.Pool
}

// NewRepository returns a repository on pool.
func NewRepository(pool *pgxpool.Pool) *Repository { return &Repository{pool: pool} }

// Record notes that tenantID owns mediaID, reached through phoneNumberID. Recording it
// again changes nothing.
func (r *Repository) Record(ctx context.Context, tenantID, mediaID, phoneNumberID string, src Source) error {
	_, err := r.pool.Exec(ctx, `
INSERT INTO media (tenant_id, media_id, phone_number_id, source) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, media_id) DO NOTHING`, tenantID, mediaID, phoneNumberID, string(src))
	if err != nil {
		return fmt.Errorf("recording media: %w", err)
	}
	return nil
}

// Owner returns the phone number id through which tenantID owns mediaID, or ErrNotFound.
func (r *Repository) Owner(ctx context.Context, tenantID, mediaID string) (string, error) {
	var pnid string
	err := r.pool.QueryRow(ctx, `SELECT phone_number_id FROM media WHERE tenant_id = $1 AND media_id = $2`,
		tenantID, mediaID).Scan(&pnid)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", ErrNotFound
	case err != nil:
		return "", fmt.Errorf("finding media: %w", err)
	}
	return pnid, nil
}

// Forget removes the tenant's record of mediaID, once Meta deleted it.
func (r *Repository) Forget(ctx context.Context, tenantID, mediaID string) error {
	if _, err := r.pool.Exec(ctx, `DELETE FROM media WHERE tenant_id = $1 AND media_id = $2`, tenantID, mediaID); err != nil {
		return fmt.Errorf("forgetting media: %w", err)
	}
	return nil
}
