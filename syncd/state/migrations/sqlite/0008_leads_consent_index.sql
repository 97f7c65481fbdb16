
    CREATE INDEX leads_consent ON leads (json_extract(lead_json, '$.consent_until'))
        WHERE delivered_hash IS NOT NULL AND action = 'upsert'
        AND json_extract(lead_json, '$.consent_until') IS NOT NULL;
    