
    CREATE INDEX leads_consent ON leads ((lead_json::jsonb ->> 'consent_until'))
        WHERE delivered_hash IS NOT NULL AND action = 'upsert'
        AND (lead_json::jsonb ->> 'consent_until') IS NOT NULL;
    