<?php
// Shoperti's PHP sample ("Recibiendo Webhooks", seeds/004_76d8930f11fa7dd9.txt), run
// against hookline with `php -S 127.0.0.1:8000 webhook.php`. The seed's lines are kept
// as they are; what hookline adds is marked "hookline:".
//
// "Verificando eventos": the receiver asks the API for the event by its id, to be sure it
// belongs to its account. hookline: the id is the `webhook-id` header (the message id),
// the API is GET {HOOKLINE_URL}/api/v1/app/{HOOKLINE_APP}/msg/{webhook-id}, called with
// the store's own read-only token (HOOKLINE_TOKEN), which cannot see any other store.
// An event the API does not know, or whose stored payload differs from what arrived, is
// refused (401) and not used.
//
// hookline: if WEBHOOK_SECRET is set (the endpoint's `whsec_` secret), the Standard
// Webhooks signature is checked too, before any API call. Shoperti documents no signature.
//
// hookline: each accepted event is appended to RECEIPTS_FILE (if set), one JSON line.

// Recibir el cuerpo de la petición.
$input = @file_get_contents("php://input");
// Parsear el contenido como JSON.
$eventJson = json_decode($input);

// hookline: the signature, when a secret is configured.
$webhookId = $_SERVER['HTTP_WEBHOOK_ID'] ?? '';
$secret = getenv('WEBHOOK_SECRET') ?: '';
if ($secret !== '' && !valid_signature(
    $secret,
    $webhookId,
    $_SERVER['HTTP_WEBHOOK_TIMESTAMP'] ?? '',
    $input,
    $_SERVER['HTTP_WEBHOOK_SIGNATURE'] ?? ''
)) {
    http_response_code(401);
    echo "invalid signature\n";
    return;
}

// hookline: "Verificando eventos" — look the event up by its id through the API.
[$status, $stored] = lookup_event($webhookId);
if ($status !== 200 || !is_array($stored)
    || $stored['payload'] !== json_decode($input, true)) {
    http_response_code(401);
    echo "unknown event\n";
    return;
}

// Usar los datos del Webhooks para alguna acción.
// hookline: from here on, use $stored (what the API says), not what arrived.
$receipts = getenv('RECEIPTS_FILE');
if ($receipts) {
    file_put_contents($receipts, json_encode([
        'webhookId' => $webhookId,
        'eventType' => $stored['eventType'],
        'eventId' => $stored['eventId'] ?? null,
        'lookupStatus' => $status,
        'signatureChecked' => $secret !== '',
        'payload' => $stored['payload'],
    ]) . "\n", FILE_APPEND | LOCK_EX);
}

// Responder
http_response_code(200);

/** GET the message by id with the store's token; returns [HTTP status, decoded body]. */
function lookup_event(string $id): array
{
    if ($id === '') {
        return [0, null];
    }
    $base = rtrim(getenv('HOOKLINE_URL') ?: 'http://127.0.0.1:8080', '/');
    $app = getenv('HOOKLINE_APP') ?: 'mi-tienda';
    $url = $base . '/api/v1/app/' . rawurlencode($app) . '/msg/' . rawurlencode($id);
    $context = stream_context_create(['http' => [
        'method' => 'GET',
        'header' => 'Authorization: Bearer ' . (getenv('HOOKLINE_TOKEN') ?: '') . "\r\n",
        'ignore_errors' => true,
        'timeout' => 5,
    ]]);
    $body = @file_get_contents($url, false, $context);
    $status = 0;
    if (isset($http_response_header[0])
        && preg_match('#^HTTP/\S+\s+(\d{3})#', $http_response_header[0], $m)) {
        $status = (int) $m[1];
    }
    return [$status, $body === false ? null : json_decode($body, true)];
}

/**
 * Standard Webhooks: base64 HMAC-SHA256 of "{id}.{timestamp}.{body}", keyed by the
 * base64-decoded part of the `whsec_` secret; the header holds space-separated `v1,<sig>`.
 */
function valid_signature(string $secret, string $id, string $timestamp, string $body, string $header): bool
{
    if ($id === '' || strncmp($secret, 'whsec_', 6) !== 0 || !ctype_digit($timestamp)) {
        return false;
    }
    if (abs(time() - (int) $timestamp) > 300) {
        return false;
    }
    $key = base64_decode(substr($secret, 6), true);
    if ($key === false) {
        return false;
    }
    $expected = base64_encode(hash_hmac('sha256', "$id.$timestamp.$body", $key, true));
    foreach (explode(' ', $header) as $signature) {
        $parts = explode(',', $signature, 2);
        if (count($parts) === 2 && $parts[0] === 'v1' && hash_equals($expected, $parts[1])) {
            return true;
        }
    }
    return false;
}
